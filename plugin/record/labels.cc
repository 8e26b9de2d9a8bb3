#include "plugin/record/labels.h"

#include "absl/strings/str_cat.h"

namespace snapledger {

absl::Status ValidateLabels(const Labels& labels) {
  size_t total = 0;
  for (const auto& [k, v] : labels) {
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
