// The ledger: snapledger's durable record of every snapshot, in RocksDB.
//
// Key spaces (one column family, prefix-separated, so one WriteBatch can
// change any of them atomically):
//   s/<key>                         -> Record (proto/snapledger/store/v1)
//   c/<parent backend id:be64><child>   -> ""  children index
//   o/<key>                         -> ""  owned index: owner, leases or
//                                          held_by set
//   n/<ns>\0<containerd key>\0<key> -> ""  name index (records with an
//                                          identity: namespace, containerd key)
//   t/<state:u8><sub:u8><key>       -> ""  state index, every state but LIVE
//                                          (sub 1: REMOVE_PENDING, no due time)
//   m/n/<state:u8><sub:u8><kind:u8> -> signed be64 count, merged by addition
//                                          (sub 2: REMOVE_PENDING held for a
//                                          container)
//   q/<state:u8><requested:be64><key> -> ""  queued removals (REMOVE_PENDING,
//                                          STUCK) by the time asked for
//   m/seq, m/next_id                -> big-endian uint64, merged with max()
//   m/index_version                 -> the version of the indexes above
//   h/<seq:be64><index:be32>        -> HistoryEvent, written with the change
//
// The indexes and counts are kept by Write in the same batch as the records
// (it reads each record's stored version to drop its stale entries); Open
// rebuilds them when m/index_version is absent or old (a ledger written by
// an earlier version), so nothing periodic has to scan the records.
//
// Every write is one atomic batch, stamped with a new ledger sequence number
// that is stored in each record it puts. With Options::sync (the default) a
// synced write (Durability::kSynced) returns only once it is on stable
// storage; a deferred one (kDeferred) is made durable by the next synced
// write. The write-ahead log is one sequence, so a crash loses a suffix of
// the writes (deferred ones and those after them), never one from the middle.
//
// Thread-safety: all methods are safe to call concurrently. The ledger does
// not serialise writers on the same key: callers (the coordinator's key
// locks) must.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "snapledger/store/v1/record.pb.h"

namespace rocksdb {
class DB;
class Cache;
}  // namespace rocksdb

namespace snapledger {

using Record = ::snapledger::store::v1::Record;
using RecordState = ::snapledger::store::v1::State;
using RecordKind = ::snapledger::store::v1::Kind;
using HistoryEvent = ::snapledger::store::v1::HistoryEvent;

// Records that are usable snapshots from containerd's point of view.
bool IsVisible(const Record& record);

class Ledger {
 public:
  // How durable a write is when Ledger::Write returns. Without Options::sync
  // no write is synced, and both behave alike (handed to the OS at once).
  enum class Durability {
    // On stable storage: survives a crash and a power loss.
    kSynced,
    // Visible at once to readers of this Ledger, but kept in the write-ahead
    // log's buffer in memory until the next synced write (any caller's)
    // carries it to stable storage, or until the ledger has had no deferred
    // write for Options::deferred_flush_delay, when it is handed to the OS
    // (not synced). A crash (even a killed process) before either loses it,
    // and with it every write that began after it returned. For completions
    // whose intent was synced: recovery redoes them from the intent.
    kDeferred,
  };

  // One write, as Options::on_write sees it.
  struct WriteSample {
    bool synced = false;  // fsynced before returning
    absl::Duration took;  // the RocksDB write (and its fsync)
    bool ok = false;      // false: the write failed (Write returns an error)
  };

  struct Options {
    // Directory of the RocksDB database; created if missing.
    std::string path;
    // fsync the write-ahead log before a synced write returns. Without it no
    // write is synced (each is handed to the OS as it is made).
    bool sync = true;
    // With `sync`: how long the ledger waits, after its last deferred write,
    // before it hands deferred writes to the OS, so that readers in other
    // processes (read_only) see them. Synced writes carry them earlier.
    absl::Duration deferred_flush_delay = absl::Milliseconds(20);
    // Open without writing anything and without taking the database lock: for
    // post-mortem reading beside (or without) a running daemon.
    bool read_only = false;
    // Bounds on memory, whatever the number of records.
    size_t block_cache_bytes = 8 << 20;
    size_t write_buffer_bytes = 4 << 20;
    // History events kept; older ones are deleted as new ones arrive.
    uint64_t history_limit = 100000;
    // Called after every Write's RocksDB write, on the writer's thread, with
    // how it went (the daemon's metrics). Must be cheap and must not call
    // back into the ledger. Empty: nothing is timed.
    std::function<void(const WriteSample&)> on_write;
  };

  // A set of changes applied atomically by Ledger::Write.
  class Batch {
   public:
    explicit Batch(Durability durability = Durability::kSynced)
        : durability_(durability) {}
    Durability durability() const { return durability_; }
    // Stores `record` under its key (replacing any record there) and indexes
    // it as a child of its parent (by record.parent_backend_id()).
    void Put(Record record);
    // Removes the record stored under record.key() and its index entry.
    void Delete(const Record& record);
    // Adds `event` to the history, stamped with the write's sequence number
    // (and the current time, if at_ns is unset).
    void Note(HistoryEvent event);
    bool empty() const { return ops_.empty() && events_.empty(); }

   private:
    friend class Ledger;
    struct Op {
      bool put;
      Record record;
    };
    Durability durability_;
    std::vector<Op> ops_;
    std::vector<HistoryEvent> events_;
  };

  // How many writes Write() made since Open, by how they were made.
  struct WriteCounts {
    uint64_t synced = 0;    // fsynced before returning
    uint64_t unsynced = 0;  // deferred, or any write without Options::sync
  };

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Ledger>> Open(
      const Options& options);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // The record stored under `key`, in any state. NotFound if none.
  [[nodiscard]] absl::StatusOr<Record> Get(std::string_view key) const;

  // Calls `fn` for every record in key order until it returns false. Sees a
  // consistent snapshot of the ledger taken at the start of the call.
  [[nodiscard]] absl::Status ForEach(
      absl::FunctionRef<bool(const Record&)> fn) const;

  // Calls `fn` for every record in `state` (not LIVE: InvalidArgument), in
  // key order, until it returns false; through the state index.
  [[nodiscard]] absl::Status ForEachInState(
      RecordState state, absl::FunctionRef<bool(const Record&)> fn) const;
  // Calls `fn` for every record whose owner, leases or held_by is set, in key
  // order, until it returns false; through the owned index.
  [[nodiscard]] absl::Status ForEachOwned(
      absl::FunctionRef<bool(const Record&)> fn) const;
  // The records (any state) whose namespace is `ns` and containerd key is
  // `containerd_key`, in key order; through the name index.
  [[nodiscard]] absl::StatusOr<std::vector<Record>> ByName(
      std::string_view ns, std::string_view containerd_key) const;

  // Records per state, kept incrementally by every write.
  struct Counts {
    std::map<RecordState, uint64_t> by_state;
    // The same records by state and kind.
    std::map<std::pair<RecordState, RecordKind>, uint64_t> by_state_kind;
    // Of the REMOVE_PENDING ones, those without a due time (waiting for
    // their children, or held for a container).
    uint64_t pending_without_due = 0;
    // Of those, the ones held for a container (held_by set).
    uint64_t pending_held = 0;
    uint64_t total() const;
  };
  [[nodiscard]] absl::StatusOr<Counts> CountRecords() const;

  // When the oldest removal now in `state` (REMOVE_PENDING or STUCK, else
  // InvalidArgument) was asked for (its remove_requested_ns); nullopt when
  // none is. One seek in the request index, whatever the ledger's size.
  [[nodiscard]] absl::StatusOr<std::optional<absl::Time>> OldestRemovalRequest(
      RecordState state) const;

  // The bytes of the ledger's files on disk (its directory: tables, logs,
  // manifest), summed from one directory listing.
  [[nodiscard]] absl::StatusOr<uint64_t> DiskBytes() const;

  // Keys of the records whose parent is backend object `parent_id` (in any
  // state), in key order, at most `limit` of them.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Children(
      uint64_t parent_id, size_t limit = SIZE_MAX) const;

  // History events, newest first: those about `key` (all when empty), with
  // seq < `before_seq` (0: no bound), at most `limit`.
  [[nodiscard]] absl::StatusOr<std::vector<HistoryEvent>> History(
      std::string_view key, size_t limit, uint64_t before_seq = 0) const;

  // A backend id never handed out before, even across restarts (persisted
  // with the next write that stores it, and recovered as the maximum of the
  // stored counter and every id found in records or the backend).
  uint64_t AllocateId();
  // Ensures AllocateId() returns only ids greater than `id`.
  void ReserveIdsUpTo(uint64_t id);

  // Applies `batch` atomically, stamping each put record with a new sequence
  // number, as durably as batch.durability() says. Unavailable (naming the
  // cause) when the write cannot be made durable, e.g. the disk is full;
  // nothing of the batch is applied then. After such a failure RocksDB refuses
  // writes until it is resumed: each later Write first tries to resume (at most
  // every 500 ms), so the ledger heals by itself once space returns. An error
  // RocksDB cannot resume from (a WAL it could not create for want of
  // descriptors: EMFILE) is cleared by reopening the database (Reopen); reads
  // keep working throughout, except for the moment of a reopen (Unavailable).
  [[nodiscard]] absl::Status Write(Batch& batch);

  // Whether the last write failed and the ledger is refusing writes.
  bool degraded() const { return degraded_.load(); }
  // OK when the ledger takes writes; after a failed write, tries to heal
  // as a write would (at most every 500 ms) and answers Unavailable naming
  // the error while it cannot. For health checks.
  [[nodiscard]] absl::Status CheckWritable();

  WriteCounts write_counts() const {
    return {synced_writes_.load(std::memory_order_relaxed),
            unsynced_writes_.load(std::memory_order_relaxed)};
  }

  // A setting of the ledger itself, such as "backend" (the backend the root
  // was created with). NotFound if it was never set.
  [[nodiscard]] absl::StatusOr<std::string> GetSetting(
      std::string_view name) const;
  // Stores a setting durably (a synced write of its own, outside any batch).
  // FailedPrecondition on a read-only ledger.
  [[nodiscard]] absl::Status PutSetting(std::string_view name,
                                        std::string_view value);
  // The sequence number of the latest write.
  uint64_t LastSequence() const { return last_seq_.load(); }

  const Options& options() const { return options_; }

 private:
  Ledger(Options options, std::shared_ptr<rocksdb::DB> db,
         std::shared_ptr<rocksdb::Cache> cache);
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<rocksdb::DB>> OpenRocks(
      const Options& options, std::shared_ptr<rocksdb::Cache> cache);
  // The open database, held by the caller for the length of its use;
  // Unavailable while Reopen has none.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<rocksdb::DB>> Db() const;
  // Closes the database (once its users are done, at most 1 s later, and
  // its WAL buffer is on disk) and opens it again: what clears an error
  // RocksDB cannot resume from. Under resume_mu_.
  [[nodiscard]] absl::Status Reopen() ABSL_EXCLUSIVE_LOCKS_REQUIRED(resume_mu_);
  [[nodiscard]] absl::Status LoadCounters();
  // Whether deferred writes stay in RocksDB's buffer (manual WAL flush).
  bool defers_writes() const { return options_.sync && !options_.read_only; }
  // Notes a deferred write made at `now_ns`, waking the flusher if idle.
  void NoteDeferredWrite(int64_t now_ns);
  // The flusher thread: hands deferred writes to the OS once the ledger has
  // had none for deferred_flush_delay.
  void FlushLoop();
  // Rebuilds every index and count from the records, unless m/index_version
  // is current. Also bounds the counters by the records' ids and sequences.
  [[nodiscard]] absl::Status CheckIndexes(uint64_t* seq, uint64_t* next_id);
  // FailedPrecondition on a read-only ledger whose indexes are missing.
  [[nodiscard]] absl::Status RequireIndexes() const;
  // The stored record under `key`, or nullopt.
  [[nodiscard]] absl::StatusOr<std::optional<Record>> Stored(
      std::string_view key) const;
  [[nodiscard]] absl::Status ForEachIndexed(
      std::string_view prefix, size_t key_offset,
      absl::FunctionRef<bool(const Record&)> fn) const;

  const Options options_;
  std::shared_ptr<rocksdb::Cache> cache_;
  // Replaced only by Reopen.
  mutable absl::Mutex db_mu_;
  std::shared_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(db_mu_);
  [[nodiscard]] absl::Status TryResume() ABSL_LOCKS_EXCLUDED(resume_mu_);

  // Whether the indexes are current (false only on a read-only ledger an
  // earlier version wrote).
  bool indexed_ = false;
  std::atomic<uint64_t> last_seq_{0};
  std::atomic<uint64_t> next_id_{1};
  // Set when a write fails; cleared once RocksDB has resumed.
  std::atomic<bool> degraded_{false};
  absl::Mutex resume_mu_;
  absl::Time last_resume_attempt_ ABSL_GUARDED_BY(resume_mu_);
  std::string last_write_error_ ABSL_GUARDED_BY(resume_mu_);

  std::atomic<uint64_t> synced_writes_{0};
  std::atomic<uint64_t> unsynced_writes_{0};
  // Deferred writes not yet handed to the OS (or synced), and the time of the
  // latest one.
  std::atomic<bool> unflushed_{false};
  std::atomic<int64_t> last_deferred_ns_{0};
  absl::Mutex flush_mu_;
  absl::CondVar flush_cv_;
  bool flush_stop_ ABSL_GUARDED_BY(flush_mu_) = false;
  std::thread flusher_;  // runs while defers_writes()
};

}  // namespace snapledger
