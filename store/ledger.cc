#include "store/ledger.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SNAPLEDGER_LEDGER_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define SNAPLEDGER_LEDGER_TSAN 1
#endif
#ifdef SNAPLEDGER_LEDGER_TSAN
// The TSan runtime's dynamic annotations (no public header declares them).
extern "C" {
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
}
#endif

namespace snapledger {
namespace {

// ThreadSanitizer builds only: brackets a call into RocksDB that writes.
// Debian's RocksDB is not instrumented, so TSan sees none of the ordering its
// write thread gives concurrent writers (atomics and futexes inside the
// library). It does see some of the memory: under C++20 every translation
// unit instantiates std::string itself, and our instrumented copy of
// std::string's growth path interposes the one inside libstdc++, so when
// RocksDB merges a write group into its own batch buffer (a string member
// of the database object, touched by one group leader after another) TSan
// records those appends and, missing RocksDB's ordering, reports a race
// between two of our threads that are each inside Ledger::Write. Accesses
// made by this thread inside the call are therefore not recorded; the
// ledger's own state around it stays checked. Elsewhere this is nothing.
#ifdef SNAPLEDGER_LEDGER_TSAN
class UninstrumentedWrite {
 public:
  UninstrumentedWrite() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~UninstrumentedWrite() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
  UninstrumentedWrite(const UninstrumentedWrite&) = delete;
  UninstrumentedWrite& operator=(const UninstrumentedWrite&) = delete;
};
#endif

// `call()`, inside an UninstrumentedWrite under TSan.
template <typename Fn>
rocksdb::Status RocksWrite(Fn&& call) {
#ifdef SNAPLEDGER_LEDGER_TSAN
  UninstrumentedWrite guard;
#endif
  return std::forward<Fn>(call)();
}

constexpr std::string_view kRecordPrefix = "s/";
constexpr std::string_view kChildPrefix = "c/";
constexpr std::string_view kSeqKey = "m/seq";
constexpr std::string_view kNextIdKey = "m/next_id";
constexpr std::string_view kSettingPrefix = "m/setting/";
constexpr std::string_view kOwnedPrefix = "o/";
constexpr std::string_view kNamePrefix = "n/";
constexpr std::string_view kStatePrefix = "t/";
constexpr std::string_view kCountPrefix = "m/n/";
constexpr std::string_view kRequestPrefix = "q/";
constexpr std::string_view kIndexVersionKey = "m/index_version";
// Bump when an index is added or its keys change: Open then rebuilds.
// 2: the counts by kind and held removals (m/n/ keys of three bytes), the
// removal request index (q/).
constexpr std::string_view kIndexVersion = "2";

std::string RecordKey(std::string_view key) {
  std::string out(kRecordPrefix);
  out.append(key);
  return out;
}

std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

constexpr std::string_view kHistoryPrefix = "h/";

std::string HistoryKey(uint64_t seq, uint32_t index) {
  std::string key(kHistoryPrefix);
  key += EncodeU64(seq);
  for (int shift = 24; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((index >> shift) & 0xff));
  }
  return key;
}

uint64_t DecodeU64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < s.size() && i < 8; ++i) {
    v = (v << 8) | static_cast<uint8_t>(s[i]);
  }
  return v;
}

// Children are indexed by their parent's backend id, not its key: ids are
// never reused, so a key used again (after its snapshot was removed, or while
// its removal is deferred) never inherits another snapshot's children.
std::string ChildIndexPrefix(uint64_t parent_id) {
  std::string out(kChildPrefix);
  out += EncodeU64(parent_id);
  return out;
}

std::string ChildIndexKey(uint64_t parent_id, std::string_view child) {
  std::string out = ChildIndexPrefix(parent_id);
  out.append(child);
  return out;
}

std::string NameIndexPrefix(std::string_view ns, std::string_view ckey) {
  std::string out(kNamePrefix);
  out.append(ns);
  out.push_back('\0');
  out.append(ckey);
  out.push_back('\0');
  return out;
}

// A record's class for the state index and the counts: its state, and for
// REMOVE_PENDING whether it has a due time (sub 0) or waits for its
// children (sub 1).
std::string StateClass(const Record& r) {
  std::string out(2, '\0');
  out[0] = static_cast<char>(r.state() & 0xff);
  out[1] = r.state() == store::v1::REMOVE_PENDING && r.next_attempt_ns() == 0
               ? '\1'
               : '\0';
  return out;
}

// A record's class for the counts: its StateClass, with REMOVE_PENDING
// records held for a container (no due time, held_by set) in sub-class 2,
// then its kind. The counts answer "how many, by state and kind" without a
// scan (the metrics' snapshots by kind and state, the queue's held ones).
std::string CountClass(const Record& r) {
  std::string out = StateClass(r);
  if (out[1] == '\1' && !r.held_by().empty()) out[1] = '\2';
  out.push_back(static_cast<char>(r.kind() & 0xff));
  return out;
}

// Queued removals (REMOVE_PENDING, STUCK) by the time they were asked for:
// the oldest one is the first entry of its state's prefix.
std::string RequestIndexPrefix(RecordState state) {
  std::string out(kRequestPrefix);
  out.push_back(static_cast<char>(state & 0xff));
  return out;
}

// Every index entry `r` has (the keys; all values are empty).
std::vector<std::string> IndexEntries(const Record& r) {
  std::vector<std::string> out;
  if (r.parent_backend_id() != 0) {
    out.push_back(ChildIndexKey(r.parent_backend_id(), r.key()));
  }
  if (!r.owner().empty() || r.leases_size() > 0 || !r.held_by().empty()) {
    out.push_back(std::string(kOwnedPrefix) + r.key());
  }
  if (!r.namespace_().empty() && !r.containerd_key().empty()) {
    out.push_back(NameIndexPrefix(r.namespace_(), r.containerd_key()) +
                  r.key());
  }
  if (r.state() != store::v1::LIVE) {
    out.push_back(std::string(kStatePrefix) + StateClass(r) + r.key());
  }
  if (r.state() == store::v1::REMOVE_PENDING || r.state() == store::v1::STUCK) {
    out.push_back(RequestIndexPrefix(r.state()) +
                  EncodeU64(static_cast<uint64_t>(
                      std::max<int64_t>(r.remove_requested_ns(), 0))) +
                  r.key());
  }
  return out;
}

// Two merge operators over 8-byte big-endian values, by key: the counts
// (m/n/...) add as signed numbers; every other counter takes the max(), so
// that concurrent writers may persist it out of order and it only grows.
class CounterOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* logger) const override {
    uint64_t a = existing ? DecodeU64(existing->ToStringView()) : 0;
    uint64_t b = DecodeU64(value.ToStringView());
    *new_value = key.starts_with(kCountPrefix) ? EncodeU64(a + b)
                                               : EncodeU64(std::max(a, b));
    return true;
  }
  // The name of the max-only operator it extends (a database is opened with
  // the operator named when it was created).
  const char* Name() const override { return "snapledger.MaxU64"; }
};

// RocksDB's diagnostics go to the daemon's log, not to a LOG file in the
// ledger directory: that file would share the ledger's disk, and a write to
// it on a full disk trips an assertion in Debian's RocksDB build.
class SpdlogLogger : public rocksdb::Logger {
 public:
  SpdlogLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    std::vsnprintf(buf, sizeof(buf), format, ap);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      spdlog::error("rocksdb: {}", buf);
    } else {
      spdlog::warn("rocksdb: {}", buf);
    }
  }
};

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg =
      absl::StrCat("ledger ", std::string(what), " failed: ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  // Disk full, I/O errors, a database stopped after a background error:
  // conditions the operator can fix and the daemon can ride out.
  return absl::UnavailableError(msg);
}

}  // namespace

bool IsVisible(const Record& record) {
  return record.state() == store::v1::LIVE ||
         record.state() == store::v1::MISSING;
}

void Ledger::Batch::Put(Record record) {
  ops_.push_back({true, std::move(record)});
}

void Ledger::Batch::Delete(const Record& record) {
  ops_.push_back({false, record});
}

void Ledger::Batch::Note(HistoryEvent event) {
  events_.push_back(std::move(event));
}

Ledger::Ledger(Options options, std::shared_ptr<rocksdb::DB> db,
               std::shared_ptr<rocksdb::Cache> cache)
    : options_(std::move(options)),
      cache_(std::move(cache)),
      db_(std::move(db)) {}

Ledger::~Ledger() {
  if (flusher_.joinable()) {
    {
      absl::MutexLock lock(&flush_mu_);
      flush_stop_ = true;
      flush_cv_.Signal();
    }
    flusher_.join();
  }
  absl::MutexLock lock(&db_mu_);
  if (db_ != nullptr && !options_.read_only) {
    // Deferred writes too: a clean shutdown loses nothing.
    (void)(defers_writes() ? db_->FlushWAL(/*sync=*/true) : db_->SyncWAL());
    (void)db_->Close();
  }
}

absl::StatusOr<std::shared_ptr<rocksdb::DB>> Ledger::Db() const {
  absl::MutexLock lock(&db_mu_);
  if (db_ == nullptr) {
    return absl::UnavailableError(
        "the ledger is being reopened after a write error; retry");
  }
  return db_;
}

void Ledger::NoteDeferredWrite(int64_t now_ns) {
  last_deferred_ns_.store(now_ns, std::memory_order_relaxed);
  // Only the first deferred write after a flush wakes the flusher.
  if (!unflushed_.exchange(true)) {
    absl::MutexLock lock(&flush_mu_);
    flush_cv_.Signal();
  }
}

void Ledger::FlushLoop() {
  flush_mu_.Lock();
  while (!flush_stop_) {
    if (!unflushed_.load()) {
      flush_cv_.Wait(&flush_mu_);
      continue;
    }
    const absl::Time due =
        absl::FromUnixNanos(last_deferred_ns_.load(std::memory_order_relaxed)) +
        options_.deferred_flush_delay;
    if (absl::Now() < due) {
      flush_cv_.WaitWithDeadline(&flush_mu_, due);
      continue;
    }
    // Cleared before the flush: a deferred write after this point wakes the
    // flusher again; one before it is in the buffer this flush writes.
    unflushed_.store(false);
    // A ledger refusing writes heals through Write (TryResume), and the
    // first synced write after that carries the buffer: a flush attempt now
    // would only raise the error again in the middle of RocksDB's recovery.
    if (degraded_.load()) continue;
    flush_mu_.Unlock();
    absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
    rocksdb::Status s =
        !db.ok() ? rocksdb::Status::Busy("reopening")
                 : RocksWrite([&] { return (*db)->FlushWAL(/*sync=*/false); });
    db = absl::UnavailableError("released");
    if (!s.ok()) {
      // Like a failed write: later writes first try to resume.
      absl::MutexLock lock(&resume_mu_);
      if (!degraded_.exchange(true)) last_write_error_ = s.ToString();
      last_resume_attempt_ = absl::Now();
      spdlog::warn("ledger: handing deferred writes to the OS failed: {}",
                   s.ToString());
    }
    flush_mu_.Lock();
  }
  flush_mu_.Unlock();
}

absl::StatusOr<std::shared_ptr<rocksdb::DB>> Ledger::OpenRocks(
    const Options& options, std::shared_ptr<rocksdb::Cache> cache) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.cache_index_and_filter_blocks = true;

  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  db_options.merge_operator = std::make_shared<CounterOperator>();
  db_options.write_buffer_size = options.write_buffer_bytes;
  db_options.max_write_buffer_number = 2;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 3;
  db_options.max_manifest_file_size = 8 << 20;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_options.info_log = std::make_shared<SpdlogLogger>();
  db_options.paranoid_checks = true;
  // No WAL preallocation: a full disk then fails the very write that cannot
  // be stored (a clean Unavailable), instead of a later background flush.
  db_options.allow_fallocate = false;
  // Deferred writes stay in RocksDB's WAL buffer: a synced write flushes the
  // buffer before its fsync (carrying every earlier write with it), and the
  // flusher thread hands it to the OS once writes pause. Without this, each
  // write would reach the OS at once and a killed process could never lose
  // a deferred write, so the crash tests could not see recovery redo one.
  db_options.manual_wal_flush = options.sync && !options.read_only;

  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      options.read_only
          ? rocksdb::DB::OpenForReadOnly(db_options, options.path, &raw)
          : rocksdb::DB::Open(db_options, options.path, &raw);
  if (!s.ok()) {
    return FromRocks(s, absl::StrCat("open of ", options.path));
  }
  return std::shared_ptr<rocksdb::DB>(raw);
}

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const Options& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("ledger path must not be empty");
  }
  if (!options.read_only) {
    std::error_code ec;
    std::filesystem::create_directories(options.path, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat(
          "cannot create ledger directory ", options.path, ": ", ec.message()));
    }
  }
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = OpenRocks(options, cache);
  if (!db.ok()) return db.status();
  std::unique_ptr<Ledger> ledger(
      new Ledger(options, *std::move(db), std::move(cache)));
  if (absl::Status st = ledger->LoadCounters(); !st.ok()) return st;
  if (ledger->defers_writes()) {
    try {
      Ledger* raw_ledger = ledger.get();
      ledger->flusher_ = std::thread([raw_ledger] { raw_ledger->FlushLoop(); });
    } catch (const std::system_error& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot start the ledger's flusher: ", e.what()));
    }
  }
  return ledger;
}

absl::Status Ledger::LoadCounters() {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::string value;
  uint64_t seq = 0;
  uint64_t next_id = 1;
  rocksdb::Status s = (*db)->Get({}, std::string(kSeqKey), &value);
  if (s.ok()) {
    seq = DecodeU64(value);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read of the sequence counter");
  }
  s = (*db)->Get({}, std::string(kNextIdKey), &value);
  if (s.ok()) {
    next_id = std::max<uint64_t>(1, DecodeU64(value));
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read of the id counter");
  }
  if (absl::Status st = CheckIndexes(&seq, &next_id); !st.ok()) return st;
  last_seq_.store(seq);
  next_id_.store(next_id);
  return absl::OkStatus();
}

absl::Status Ledger::CheckIndexes(uint64_t* seq, uint64_t* next_id) {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::string version;
  rocksdb::Status s = (*db)->Get({}, std::string(kIndexVersionKey), &version);
  if (s.ok() && version == kIndexVersion) {
    indexed_ = true;
    return absl::OkStatus();
  }
  if (!s.ok() && !s.IsNotFound()) {
    return FromRocks(s, "read of the index version");
  }
  if (options_.read_only) {
    spdlog::warn(
        "the ledger at {} has no current indexes (an earlier version wrote "
        "it): queries by state, owner or name are unavailable until a "
        "daemon opens it",
        options_.path);
    return absl::OkStatus();
  }
  // A ledger an earlier version wrote (or a rebuild a crash interrupted):
  // every index and count again, from the records. The version goes last,
  // in a synced write, so an interrupted rebuild runs again.
  spdlog::info("ledger: building the indexes of {}", options_.path);
  rocksdb::WriteOptions wo;
  for (std::string_view prefix : {kChildPrefix, kOwnedPrefix, kNamePrefix,
                                  kStatePrefix, kCountPrefix, kRequestPrefix}) {
    std::string end(prefix);
    ++end.back();  // the first key after the prefix's key space
    s = RocksWrite([&] {
      return (*db)->DeleteRange(wo, (*db)->DefaultColumnFamily(),
                                std::string(prefix), end);
    });
    if (!s.ok()) return FromRocks(s, "index rebuild");
  }
  std::map<std::string, int64_t> counts;
  rocksdb::WriteBatch wb;
  uint64_t records = 0;
  absl::Status scan = ForEach([&](const Record& r) {
    // Records written by a batch whose counter merge was lost cannot exist
    // (they share one batch), but be defensive: ids and sequences in records
    // bound the counters from below.
    *seq = std::max(*seq, r.seq());
    *next_id = std::max(*next_id, r.backend_id() + 1);
    for (const std::string& k : IndexEntries(r)) wb.Put(k, "");
    ++counts[CountClass(r)];
    ++records;
    if (wb.Count() >= 10000) {
      s = RocksWrite([&] { return (*db)->Write(wo, &wb); });
      wb.Clear();
      if (!s.ok()) return false;
    }
    return true;
  });
  if (!scan.ok()) return scan;
  if (!s.ok()) return FromRocks(s, "index rebuild");
  for (const auto& [cls, n] : counts) {
    wb.Put(std::string(kCountPrefix) + cls,
           EncodeU64(static_cast<uint64_t>(n)));
  }
  wb.Put(std::string(kIndexVersionKey), std::string(kIndexVersion));
  wo.sync = true;
  s = RocksWrite([&] { return (*db)->Write(wo, &wb); });
  if (!s.ok()) return FromRocks(s, "index rebuild");
  indexed_ = true;
  spdlog::info("ledger: indexed {} records", records);
  return absl::OkStatus();
}

absl::Status Ledger::RequireIndexes() const {
  if (indexed_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "the ledger's indexes are missing (an earlier version wrote it); start "
      "snapledgerd on it once to build them");
}

absl::StatusOr<std::optional<Record>> Ledger::Stored(
    std::string_view key) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::string value;
  rocksdb::Status s = (*db)->Get({}, RecordKey(key), &value);
  if (s.IsNotFound()) return std::optional<Record>();
  if (!s.ok()) return FromRocks(s, "read");
  Record record;
  if (!record.ParseFromString(value)) {
    return absl::DataLossError(absl::StrCat(
        "ledger record for ", std::string(key), " cannot be parsed"));
  }
  return std::optional<Record>(std::move(record));
}

absl::Status Ledger::ForEachIndexed(
    std::string_view prefix, size_t key_offset,
    absl::FunctionRef<bool(const Record&)> fn) const {
  if (absl::Status s = RequireIndexes(); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator(ro));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid();
       it->Next()) {
    std::string_view k = it->key().ToStringView();
    if (!k.starts_with(prefix)) break;
    absl::StatusOr<std::optional<Record>> record = Stored(k.substr(key_offset));
    if (!record.ok()) return record.status();
    // An entry always has its record (they are written together); skip
    // rather than fail if not.
    if (!record->has_value()) continue;
    if (!fn(**record)) return absl::OkStatus();
  }
  return FromRocks(it->status(), "index scan");
}

absl::Status Ledger::ForEachInState(
    RecordState state, absl::FunctionRef<bool(const Record&)> fn) const {
  if (state == store::v1::LIVE) {
    return absl::InvalidArgumentError("LIVE records are not indexed by state");
  }
  std::string prefix(kStatePrefix);
  prefix.push_back(static_cast<char>(state & 0xff));
  // Both sub-classes; each is in key order, together not quite: merge them.
  std::vector<Record> records;
  if (absl::Status s = ForEachIndexed(prefix, prefix.size() + 1,
                                      [&](const Record& r) {
                                        records.push_back(r);
                                        return true;
                                      });
      !s.ok()) {
    return s;
  }
  std::sort(records.begin(), records.end(),
            [](const Record& a, const Record& b) { return a.key() < b.key(); });
  for (const Record& r : records) {
    if (!fn(r)) break;
  }
  return absl::OkStatus();
}

absl::Status Ledger::ForEachOwned(
    absl::FunctionRef<bool(const Record&)> fn) const {
  return ForEachIndexed(kOwnedPrefix, kOwnedPrefix.size(), fn);
}

absl::StatusOr<std::vector<Record>> Ledger::ByName(
    std::string_view ns, std::string_view containerd_key) const {
  const std::string prefix = NameIndexPrefix(ns, containerd_key);
  std::vector<Record> records;
  absl::Status s = ForEachIndexed(prefix, prefix.size(), [&](const Record& r) {
    // A containerd key holding a NUL could share the prefix: check.
    if (r.namespace_() == ns && r.containerd_key() == containerd_key) {
      records.push_back(r);
    }
    return true;
  });
  if (!s.ok()) return s;
  return records;
}

uint64_t Ledger::Counts::total() const {
  uint64_t n = 0;
  for (const auto& [state, count] : by_state) n += count;
  return n;
}

absl::StatusOr<Ledger::Counts> Ledger::CountRecords() const {
  if (absl::Status s = RequireIndexes(); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  Counts counts;
  const std::string prefix(kCountPrefix);
  // Bounded: the iterator reads no block beyond the counts.
  std::string end = prefix;
  ++end.back();
  const rocksdb::Slice end_slice(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &end_slice;
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator(ro));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    std::string_view k = it->key().ToStringView();
    if (!k.starts_with(prefix) || k.size() != prefix.size() + 3) break;
    const auto n = static_cast<int64_t>(DecodeU64(it->value().ToStringView()));
    if (n <= 0) continue;
    const auto state =
        static_cast<RecordState>(static_cast<uint8_t>(k[prefix.size()]));
    const auto kind =
        static_cast<RecordKind>(static_cast<uint8_t>(k[prefix.size() + 2]));
    counts.by_state[state] += static_cast<uint64_t>(n);
    counts.by_state_kind[{state, kind}] += static_cast<uint64_t>(n);
    if (k[prefix.size() + 1] != '\0') {
      counts.pending_without_due += static_cast<uint64_t>(n);
    }
    if (k[prefix.size() + 1] == '\2') {
      counts.pending_held += static_cast<uint64_t>(n);
    }
  }
  if (absl::Status s = FromRocks(it->status(), "read of the counts"); !s.ok()) {
    return s;
  }
  return counts;
}

absl::StatusOr<std::optional<absl::Time>> Ledger::OldestRemovalRequest(
    RecordState state) const {
  if (state != store::v1::REMOVE_PENDING && state != store::v1::STUCK) {
    return absl::InvalidArgumentError(
        "only queued removals are indexed by request time");
  }
  if (absl::Status s = RequireIndexes(); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  const std::string prefix = RequestIndexPrefix(state);
  std::string end = prefix;
  ++end.back();
  const rocksdb::Slice end_slice(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &end_slice;
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator(ro));
  it->Seek(prefix);
  if (!it->Valid()) {
    if (absl::Status s = FromRocks(it->status(), "read of the request index");
        !s.ok()) {
      return s;
    }
    return std::optional<absl::Time>();
  }
  std::string_view k = it->key().ToStringView();
  if (!k.starts_with(prefix) || k.size() < prefix.size() + 8) {
    return std::optional<absl::Time>();
  }
  return std::optional<absl::Time>(absl::FromUnixNanos(
      static_cast<int64_t>(DecodeU64(k.substr(prefix.size(), 8)))));
}

absl::StatusOr<uint64_t> Ledger::DiskBytes() const {
  std::error_code ec;
  uint64_t total = 0;
  for (auto it = std::filesystem::directory_iterator(options_.path, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    // A file RocksDB deletes meanwhile (compaction) just does not count.
    if (!it->is_regular_file(size_ec)) continue;
    const uintmax_t size = it->file_size(size_ec);
    if (!size_ec) total += size;
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot list the ledger directory ", options_.path, ": ",
                     ec.message()));
  }
  return total;
}

absl::StatusOr<Record> Ledger::Get(std::string_view key) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::string value;
  rocksdb::Status s = (*db)->Get({}, RecordKey(key), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("snapshot ", std::string(key), ": not found"));
  }
  if (!s.ok()) return FromRocks(s, "read");
  Record record;
  if (!record.ParseFromString(value)) {
    return absl::DataLossError(absl::StrCat(
        "ledger record for ", std::string(key), " cannot be parsed"));
  }
  return record;
}

absl::StatusOr<std::string> Ledger::GetSetting(std::string_view name) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::string value;
  rocksdb::Status s = (*db)->Get(
      {}, absl::StrCat(std::string(kSettingPrefix), std::string(name)), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("ledger setting ", std::string(name), " is not set"));
  }
  if (!s.ok()) return FromRocks(s, "read of a ledger setting");
  return value;
}

absl::Status Ledger::PutSetting(std::string_view name, std::string_view value) {
  if (options_.read_only) {
    return absl::FailedPreconditionError("the ledger is open read-only");
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  const std::string key =
      absl::StrCat(std::string(kSettingPrefix), std::string(name));
  rocksdb::Status s = RocksWrite([&] {
    return (*db)->Put(wo, key, rocksdb::Slice(value.data(), value.size()));
  });
  return s.ok() ? absl::OkStatus() : FromRocks(s, "write of a ledger setting");
}

absl::Status Ledger::ForEach(absl::FunctionRef<bool(const Record&)> fn) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;  // a full scan must not evict the working set
  // "s0" is the first key after every "s/..." key ('0' follows '/').
  const rocksdb::Slice upper_slice("s0");
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator(ro));
  Record record;
  for (it->Seek(std::string(kRecordPrefix)); it->Valid(); it->Next()) {
    if (!record.ParseFromArray(it->value().data(),
                               static_cast<int>(it->value().size()))) {
      return absl::DataLossError(absl::StrCat("ledger record for ",
                                              it->key().ToString().substr(2),
                                              " cannot be parsed"));
    }
    if (!fn(record)) return absl::OkStatus();
  }
  return FromRocks(it->status(), "scan");
}

absl::StatusOr<std::vector<std::string>> Ledger::Children(uint64_t parent_id,
                                                          size_t limit) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::vector<std::string> children;
  const std::string prefix = ChildIndexPrefix(parent_id);
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator({}));
  for (it->Seek(prefix); it->Valid() && children.size() < limit; it->Next()) {
    std::string_view k = it->key().ToStringView();
    if (!k.starts_with(prefix)) break;
    children.emplace_back(k.substr(prefix.size()));
  }
  if (absl::Status s = FromRocks(it->status(), "scan"); !s.ok()) return s;
  return children;
}

uint64_t Ledger::AllocateId() { return next_id_.fetch_add(1); }

void Ledger::ReserveIdsUpTo(uint64_t id) {
  uint64_t cur = next_id_.load();
  while (cur <= id && !next_id_.compare_exchange_weak(cur, id + 1)) {
  }
}

absl::Status Ledger::TryResume() {
  absl::MutexLock lock(&resume_mu_);
  if (!degraded_.load()) return absl::OkStatus();
  const absl::Time now = absl::Now();
  if (now - last_resume_attempt_ < absl::Milliseconds(500)) {
    return absl::UnavailableError(
        absl::StrCat("ledger is not writable (last error: ", last_write_error_,
                     "); retrying automatically"));
  }
  last_resume_attempt_ = now;
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  rocksdb::Status s = rocksdb::Status::Incomplete("the database is closed");
  if (db.ok()) {
    s = RocksWrite([&] { return (*db)->Resume(); });
    db = absl::UnavailableError("released");  // Reopen waits for every user
  }
  if (s.ok()) {
    degraded_.store(false);
    return absl::OkStatus();
  }
  // A full disk is a hard error that Resume() clears once space returns; a
  // file RocksDB could not create while switching its WAL (EMFILE) stops
  // the database for good (a fatal error: Resume() answers the error
  // again). Only a reopen clears that.
  if (s.severity() >= rocksdb::Status::Severity::kFatalError ||
      s.IsIncomplete()) {
    if (absl::Status reopened = Reopen(); reopened.ok()) {
      spdlog::info("ledger: reopened after a fatal write error ({})",
                   last_write_error_);
      degraded_.store(false);
      return absl::OkStatus();
    } else {
      return absl::UnavailableError(absl::StrCat(
          "ledger is not writable: ", reopened.message(),
          " (first error: ", last_write_error_, "); retrying automatically"));
    }
  }
  return absl::UnavailableError(absl::StrCat(
      "ledger is not writable: ", s.ToString(),
      " (first error: ", last_write_error_, "); retrying automatically"));
}

absl::Status Ledger::CheckWritable() {
  if (options_.read_only) {
    return absl::FailedPreconditionError("ledger is open read-only");
  }
  return degraded_.load() ? TryResume() : absl::OkStatus();
}

absl::Status Ledger::Reopen() {
  std::shared_ptr<rocksdb::DB> old;
  {
    absl::MutexLock lock(&db_mu_);
    old = std::move(db_);
  }
  if (old != nullptr) {
    // Readers and writers that hold the database finish first (new ones get
    // Unavailable meanwhile); one that takes long (a scan whose callback
    // reads the ledger again) makes this attempt give up, not wait forever.
    const absl::Time deadline = absl::Now() + absl::Seconds(1);
    while (old.use_count() > 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    rocksdb::Status flushed = rocksdb::Status::Busy("the database is in use");
    if (old.use_count() == 1) {
      // Deferred writes live in the old WAL's buffer: on disk before the
      // close, or they would be gone from the reopened database while their
      // callers were told they were written. If that fails, keep the old
      // one (and refuse writes) rather than lose them.
      flushed = defers_writes()
                    ? RocksWrite([&] { return old->FlushWAL(/*sync=*/true); })
                    : rocksdb::Status::OK();
    }
    if (!flushed.ok()) {
      absl::MutexLock lock(&db_mu_);
      db_ = std::move(old);
      return absl::UnavailableError(
          absl::StrCat("cannot reopen the database: ", flushed.ToString()));
    }
    (void)old->Close();
    old.reset();
  }
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> reopened =
      OpenRocks(options_, cache_);
  if (!reopened.ok()) return reopened.status();  // retried by the next write
  absl::MutexLock lock(&db_mu_);
  db_ = *std::move(reopened);
  return absl::OkStatus();
}

absl::Status Ledger::Write(Batch& batch) {
  if (options_.read_only) {
    return absl::FailedPreconditionError("ledger is open read-only");
  }
  if (degraded_.load()) {
    if (absl::Status s = TryResume(); !s.ok()) return s;
  }
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  const uint64_t seq = last_seq_.fetch_add(1) + 1;
  uint64_t max_id = 0;
  rocksdb::WriteBatch wb;
  std::string value;
  // The indexes: each op's stale entries (from the version stored, or put
  // earlier in this batch) go, its new ones come; the counts move by class.
  std::map<std::string, std::optional<Record>> touched;
  std::map<std::string, int64_t> count_deltas;
  for (auto& op : batch.ops_) {
    const Record& r = op.record;
    std::optional<Record> prior;
    if (auto t = touched.find(r.key()); t != touched.end()) {
      prior = t->second;
    } else {
      absl::StatusOr<std::optional<Record>> stored = Stored(r.key());
      if (!stored.ok()) return stored.status();
      prior = *std::move(stored);
    }
    std::vector<std::string> stale;
    if (prior.has_value()) {
      stale = IndexEntries(*prior);
      --count_deltas[CountClass(*prior)];
    }
    if (op.put) {
      op.record.set_seq(seq);
      if (!op.record.SerializeToString(&value)) {
        return absl::InternalError(
            absl::StrCat("cannot serialise the record of ", r.key()));
      }
      wb.Put(RecordKey(r.key()), value);
      const std::vector<std::string> fresh = IndexEntries(r);
      for (const std::string& k : stale) {
        if (std::find(fresh.begin(), fresh.end(), k) == fresh.end()) {
          wb.Delete(k);
        }
      }
      for (const std::string& k : fresh) wb.Put(k, "");
      ++count_deltas[CountClass(r)];
      max_id = std::max(max_id, r.backend_id());
      touched[r.key()] = r;
    } else {
      wb.Delete(RecordKey(r.key()));
      for (const std::string& k : stale) wb.Delete(k);
      touched[r.key()] = std::nullopt;
    }
  }
  for (const auto& [cls, delta] : count_deltas) {
    if (delta != 0) {
      wb.Merge(std::string(kCountPrefix) + cls,
               EncodeU64(static_cast<uint64_t>(delta)));
    }
  }
  const int64_t now_ns = absl::ToUnixNanos(absl::Now());
  for (size_t i = 0; i < batch.events_.size(); ++i) {
    HistoryEvent& event = batch.events_[i];
    event.set_seq(seq);
    if (event.at_ns() == 0) event.set_at_ns(now_ns);
    if (!event.SerializeToString(&value)) {
      return absl::InternalError("cannot serialise a history event");
    }
    wb.Put(HistoryKey(seq, static_cast<uint32_t>(i)), value);
  }
  // The history keeps the events of the last history_limit writes: trimmed
  // in one range deletion every 256 writes.
  if (seq % 256 == 0 && seq > options_.history_limit) {
    wb.DeleteRange(HistoryKey(0, 0),
                   HistoryKey(seq - options_.history_limit, 0));
  }
  wb.Merge(std::string(kSeqKey), EncodeU64(seq));
  if (max_id > 0) wb.Merge(std::string(kNextIdKey), EncodeU64(max_id + 1));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync && batch.durability_ == Durability::kSynced;
  const absl::Time write_start =
      options_.on_write ? absl::Now() : absl::InfinitePast();
  rocksdb::Status s = RocksWrite([&] { return (*db)->Write(wo, &wb); });
  if (options_.on_write) {
    options_.on_write(WriteSample{wo.sync, absl::Now() - write_start, s.ok()});
  }
  if (s.ok()) {
    (wo.sync ? synced_writes_ : unsynced_writes_)
        .fetch_add(1, std::memory_order_relaxed);
    if (!wo.sync && defers_writes()) NoteDeferredWrite(now_ns);
  }
  if (!s.ok() && !s.IsInvalidArgument()) {
    absl::MutexLock lock(&resume_mu_);
    if (!degraded_.exchange(true)) last_write_error_ = s.ToString();
    last_resume_attempt_ = absl::Now();
  }
  return FromRocks(s, "write");
}

absl::StatusOr<std::vector<HistoryEvent>> Ledger::History(
    std::string_view key, size_t limit, uint64_t before_seq) const {
  absl::StatusOr<std::shared_ptr<rocksdb::DB>> db = Db();
  if (!db.ok()) return db.status();
  std::vector<HistoryEvent> events;
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  const std::string lower(kHistoryPrefix);
  const rocksdb::Slice lower_slice(lower);
  ro.iterate_lower_bound = &lower_slice;
  std::unique_ptr<rocksdb::Iterator> it((*db)->NewIterator(ro));
  if (before_seq == 0) {
    it->SeekForPrev(HistoryKey(UINT64_MAX, UINT32_MAX));
  } else {
    it->SeekForPrev(HistoryKey(before_seq, 0));
    // Skip entries of before_seq itself (SeekForPrev lands at or before).
    while (it->Valid() && it->key().compare(HistoryKey(before_seq, 0)) >= 0) {
      it->Prev();
    }
  }
  HistoryEvent event;
  for (; it->Valid() && events.size() < limit; it->Prev()) {
    if (!it->key().starts_with(lower)) break;
    if (!event.ParseFromArray(it->value().data(),
                              static_cast<int>(it->value().size()))) {
      return absl::DataLossError("a ledger history event cannot be parsed");
    }
    if (key.empty() || event.key() == key) events.push_back(event);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read history");
  return events;
}

}  // namespace snapledger
