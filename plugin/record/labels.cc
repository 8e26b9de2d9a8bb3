#include "plugin/record/labels.h"

#include "absl/strings/str_cat.h"
#include "plugin/text/utf8.h"

namespace snapledger {

absl::Status ValidateText(std::string_view field, std::string_view value) {
  if (std::optional<size_t> at = FirstInvalidUtf8(value); at.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " is not valid UTF-8 (at byte ", *at,
                     " of ", value.size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(const Labels& labels) {
  size_t total = 0;
  for (const auto& [k, v] : labels) {
    if (absl::Status s = ValidateText("label key", k); !s.ok()) return s;
    if (absl::Status s = ValidateText(absl::StrCat("label ", k, " value"), v);
        !s.ok()) {
      return s;
    }
    total += k.size() + v.size();
    if (k.size() + v.size() > kMaxLabelBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key and value greater than maximum size (",
                       kMaxLabelBytes, " bytes), key: ", k));
    }
  }
  if (total > kMaxLabelsTotalBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels greater than maximum total size (", kMaxLabelsTotalBytes,
        " bytes): ", labels.size(), " labels of ", total, " bytes"));
  }
  return absl::OkStatus();
}

void CopyLabels(const Labels& from, Record* to) {
  to->mutable_labels()->clear();
  for (const auto& [k, v] : from) (*to->mutable_labels())[k] = v;
}

}  // namespace snapledger
