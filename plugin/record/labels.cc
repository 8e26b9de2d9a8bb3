#include "plugin/record/labels.h"

#include "absl/strings/str_cat.h"

namespace snapledger {

absl::Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.size() + v.size() > kMaxLabelBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key and value greater than maximum size (",
                       kMaxLabelBytes, " bytes), key: ", k));
    }
  }
  return absl::OkStatus();
}

void CopyLabels(const Labels& from, Record* to) {
  to->mutable_labels()->clear();
  for (const auto& [k, v] : from) (*to->mutable_labels())[k] = v;
}

}  // namespace snapledger
