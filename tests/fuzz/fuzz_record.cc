// libFuzzer target: a ledger record as read back from RocksDB (bytes that a
// damaged or hand-edited ledger may hold), through everything that reads
// one: the state predicates, the removal queue's counters, and the
// conversion to containerd's Info that Stat and List answer with.
#include <cstddef>
#include <cstdint>

#include "plugin/record/keys.h"
#include "plugin/record/states.h"
#include "plugin/server/snapshot_service.h"
#include "store/ledger.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  snapledger::Record record;
  if (!record.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)snapledger::IsVisible(record);
  (void)snapledger::IsIntent(record);
  (void)snapledger::IsRemovalRecord(record);
  (void)snapledger::HasTrackedOwner(record);
  snapledger::RemovalQueueStats stats;
  snapledger::CountRemoval(record, &stats);
  (void)snapledger::ClientKey(record);
  (void)snapledger::ToSnapshotKind(record.kind());
  snapledger::snapshots_v1::Info info;
  snapledger::ToInfo(record, &info);
  // What Stat/List answer must serialise (containerd's client parses it).
  std::string wire;
  if (!info.SerializeToString(&wire)) __builtin_trap();
  return 0;
}
