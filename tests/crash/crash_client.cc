// crash_client: workload driver and offline checker for snapledger's
// crash-consistency suites (see tests/crash/README.md).
//
//   run      concurrent clients doing random prepare/view/commit/remove/
//            update (and writes into active trees) on a shared daemon, each
//            operation journaled with its result once the RPC has returned.
//   fixture  the fixed snapshots the sweep's steps operate on.
//   step     exactly one operation of a kind (the sweep arms a crash point
//            and drives the operation that crosses it).
//   steps    lists the step kinds, one per line.
//   check    with the daemon stopped: the ledger (read-only), the backend's
//            objects and the journal must agree; see Check() for the list.
//
// Journal: one line per operation, appended (O_APPEND, one write(2) per
// line) after the RPC returned, whatever it returned:
//   O <opid> <op> <key> <arg> <CODE>
// op is prepare|view (arg: parent or "-"), commit (key: the active key, arg:
// the name), remove (arg "-"), update (arg "-"), write (a file written into
// an active snapshot's tree; arg: the file name). Every label-setting
// operation sets label crash-gen=<opid>, so the ledger shows which
// operation last wrote a record. CODE is the gRPC status name: OK is an
// acknowledged operation; NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION and
// INVALID_ARGUMENT are refusals that changed nothing; any other code
// (UNAVAILABLE when the daemon died mid-call, ...) leaves the outcome
// uncertain: it must have happened entirely or not at all, and `check`
// decides which from what it finds, appending
//   R <opid> applied|rolled-back
// so that later checks replay the journal exactly. Keys are owned by one
// client each (key k<j> by client j % clients; other clients only use it as
// a parent), so the journal orders every key's operations exactly. A client
// stops at its first uncertain result, so a key has at most one unresolved
// operation, and it is its last.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "plugin/backend/native/native_backend.h"
#include "plugin/backend/overlayfs/overlay_backend.h"
#include "plugin/backend/remote/remote_backend.h"
#include "spdlog/spdlog.h"
#include "store/ledger.h"

namespace crash {
namespace {

namespace snapshots_v1 = containerd::services::snapshots::v1;

constexpr char kGenLabel[] = "crash-gen";
constexpr char kOwnerLabel[] = "crash-owner";
constexpr auto kRpcTimeout = std::chrono::seconds(20);

// ------------------------------------------------------------ status codes --

constexpr std::array<const char*, 17> kCodeNames = {"OK",
                                                    "CANCELLED",
                                                    "UNKNOWN",
                                                    "INVALID_ARGUMENT",
                                                    "DEADLINE_EXCEEDED",
                                                    "NOT_FOUND",
                                                    "ALREADY_EXISTS",
                                                    "PERMISSION_DENIED",
                                                    "RESOURCE_EXHAUSTED",
                                                    "FAILED_PRECONDITION",
                                                    "ABORTED",
                                                    "OUT_OF_RANGE",
                                                    "UNIMPLEMENTED",
                                                    "INTERNAL",
                                                    "UNAVAILABLE",
                                                    "DATA_LOSS",
                                                    "UNAUTHENTICATED"};

std::string CodeName(grpc::StatusCode code) {
  const int c = static_cast<int>(code);
  if (c >= 0 && c < static_cast<int>(kCodeNames.size())) return kCodeNames[c];
  return absl::StrCat("CODE_", c);
}

enum class Outcome { kOk, kRefused, kUncertain };

Outcome Classify(const std::string& code) {
  if (code == "OK") return Outcome::kOk;
  if (code == "NOT_FOUND" || code == "ALREADY_EXISTS" ||
      code == "FAILED_PRECONDITION" || code == "INVALID_ARGUMENT") {
    return Outcome::kRefused;
  }
  return Outcome::kUncertain;
}

// ------------------------------------------------------------------- model --

enum class Kind { kAbsent, kActive, kView, kCommitted };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kAbsent:
      return "absent";
    case Kind::kActive:
      return "active";
    case Kind::kView:
      return "view";
    case Kind::kCommitted:
      return "committed";
  }
  return "?";
}

struct KeyState {
  Kind kind = Kind::kAbsent;
  std::string parent;
  std::string gen;  // label crash-gen: the opid of the last labelling op
  // Files the owner wrote into the tree (active), carried into the commit.
  std::set<std::string> files;
};

std::string Describe(const KeyState& s) {
  if (s.kind == Kind::kAbsent) return "absent";
  std::string out = KindName(s.kind);
  absl::StrAppend(&out, " (parent \"", s.parent, "\", gen ", s.gen);
  if (!s.files.empty()) {
    absl::StrAppend(&out, ", files ", absl::StrJoin(s.files, ","));
  }
  absl::StrAppend(&out, ")");
  return out;
}

struct Op {
  std::string opid;
  std::string op;   // prepare view commit remove update write
  std::string key;  // the key operated on (commit: the active key)
  std::string arg = "-";
  std::string code;
};

std::string FormatOp(const Op& op) {
  return absl::StrCat("O ", op.opid, " ", op.op, " ", op.key, " ", op.arg, " ",
                      op.code);
}

// Keys an operation changes.
std::vector<std::string> Touched(const Op& op) {
  if (op.op == "commit") return {op.key, op.arg};
  return {op.key};
}

using Model = std::map<std::string, KeyState>;

KeyState StateOf(const Model& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? KeyState{} : it->second;
}

// Applies a successful operation to the model.
void Apply(Model& m, const Op& op) {
  const std::string parent = op.arg == "-" ? "" : op.arg;
  if (op.op == "prepare") {
    m[op.key] = KeyState{Kind::kActive, parent, op.opid, {}};
  } else if (op.op == "view") {
    m[op.key] = KeyState{Kind::kView, parent, op.opid, {}};
  } else if (op.op == "commit") {
    KeyState from = StateOf(m, op.key);
    m.erase(op.key);
    m[op.arg] = KeyState{Kind::kCommitted, from.parent, op.opid, from.files};
  } else if (op.op == "remove") {
    m.erase(op.key);
  } else if (op.op == "update") {
    m[op.key].gen = op.opid;
  } else if (op.op == "write") {
    m[op.key].files.insert(op.arg);
  }
}

// ----------------------------------------------------------------- journal --

class Journal {
 public:
  explicit Journal(const std::string& path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      std::fprintf(stderr, "crash_client: cannot open journal %s: %s\n",
                   path.c_str(), std::strerror(errno));
      std::exit(2);
    }
  }
  ~Journal() { ::close(fd_); }
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // One write(2) per line: O_APPEND keeps concurrent lines whole.
  void Append(const std::string& line) {
    const std::string l = line + "\n";
    size_t done = 0;
    while (done < l.size()) {
      ssize_t n = ::write(fd_, l.data() + done, l.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        std::fprintf(stderr, "crash_client: journal write: %s\n",
                     std::strerror(errno));
        std::exit(2);
      }
      done += static_cast<size_t>(n);
    }
  }

 private:
  int fd_ = -1;
};

// ------------------------------------------------------------------ client --

// The directory holding a snapshot's own tree, from the first mount Mounts
// returned: a bind mount's source (the native backend; the overlayfs backend
// for a snapshot without a parent), or an overlay mount's upperdir (the
// overlayfs backend: the active snapshot's own layer, which a write through
// the mount lands in). False for an overlay without upperdir (a view).
bool OwnTree(const containerd::types::Mount& m, std::string* dir) {
  if (m.type() != "overlay") {
    *dir = m.source();
    return true;
  }
  for (const std::string& o : m.options()) {
    if (o.starts_with("upperdir=")) {
      *dir = o.substr(std::strlen("upperdir="));
      return true;
    }
  }
  return false;
}

class Client {
 public:
  explicit Client(const std::string& address)
      : stub_(snapshots_v1::Snapshots::NewStub(grpc::CreateChannel(
            "unix:" + address, grpc::InsecureChannelCredentials()))) {}

  grpc::Status Prepare(const std::string& key, const std::string& parent,
                       const std::map<std::string, std::string>& labels,
                       std::string* source) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::PrepareSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    snapshots_v1::PrepareSnapshotResponse resp;
    grpc::Status s = stub_->Prepare(&ctx, req, &resp);
    if (s.ok() && source != nullptr && resp.mounts_size() > 0) {
      OwnTree(resp.mounts(0), source);
    }
    return s;
  }

  // `lower`, if given, gets the directory of the parent's tree: a read-only
  // bind mount's source, or an overlay's first (topmost) lowerdir.
  grpc::Status View(const std::string& key, const std::string& parent,
                    const std::map<std::string, std::string>& labels,
                    std::string* lower = nullptr) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::ViewSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    snapshots_v1::ViewSnapshotResponse resp;
    grpc::Status s = stub_->View(&ctx, req, &resp);
    if (s.ok() && lower != nullptr && resp.mounts_size() > 0) {
      const containerd::types::Mount& m = resp.mounts(0);
      if (m.type() != "overlay") {
        *lower = m.source();
      } else {
        for (const std::string& o : m.options()) {
          if (o.starts_with("lowerdir=")) {
            std::string dirs = o.substr(std::strlen("lowerdir="));
            *lower = dirs.substr(0, dirs.find(':'));
          }
        }
      }
    }
    return s;
  }

  grpc::Status Commit(const std::string& name, const std::string& key,
                      const std::map<std::string, std::string>& labels) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    google::protobuf::Empty resp;
    return stub_->Commit(&ctx, req, &resp);
  }

  grpc::Status Remove(const std::string& key) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty resp;
    return stub_->Remove(&ctx, req, &resp);
  }

  // Sets one label through the update mask "labels.<label>".
  grpc::Status UpdateLabel(const std::string& key, const std::string& label,
                           const std::string& value) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::UpdateSnapshotRequest req;
    req.mutable_info()->set_name(key);
    (*req.mutable_info()->mutable_labels())[label] = value;
    req.mutable_update_mask()->add_paths("labels." + label);
    snapshots_v1::UpdateSnapshotResponse resp;
    return stub_->Update(&ctx, req, &resp);
  }

  grpc::Status Stat(const std::string& key, snapshots_v1::Info* info) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::StatSnapshotRequest req;
    req.set_key(key);
    snapshots_v1::StatSnapshotResponse resp;
    grpc::Status s = stub_->Stat(&ctx, req, &resp);
    if (s.ok()) *info = resp.info();
    return s;
  }

  grpc::Status MountSource(const std::string& key, std::string* source) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::MountsRequest req;
    req.set_key(key);
    snapshots_v1::MountsResponse resp;
    grpc::Status s = stub_->Mounts(&ctx, req, &resp);
    if (s.ok()) {
      if (resp.mounts_size() == 0) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "no mounts returned");
      }
      if (!OwnTree(resp.mounts(0), source)) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            "the mount has no tree of its own to write into "
                            "(an overlay without upperdir)");
      }
    }
    return s;
  }

  grpc::Status Usage(const std::string& key) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::UsageRequest req;
    req.set_key(key);
    snapshots_v1::UsageResponse resp;
    return stub_->Usage(&ctx, req, &resp);
  }

  grpc::Status Cleanup() {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::CleanupRequest req;
    google::protobuf::Empty resp;
    return stub_->Cleanup(&ctx, req, &resp);
  }

  grpc::Status List(std::vector<snapshots_v1::Info>* out) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    snapshots_v1::ListSnapshotsRequest req;
    auto reader = stub_->List(&ctx, req);
    snapshots_v1::ListSnapshotsResponse resp;
    while (reader->Read(&resp)) {
      for (const auto& info : resp.info()) out->push_back(info);
    }
    return reader->Finish();
  }

 private:
  static void SetDeadline(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  }

  std::unique_ptr<snapshots_v1::Snapshots::Stub> stub_;
};

KeyState FromInfo(const snapshots_v1::Info& info) {
  KeyState s;
  switch (info.kind()) {
    case snapshots_v1::ACTIVE:
      s.kind = Kind::kActive;
      break;
    case snapshots_v1::VIEW:
      s.kind = Kind::kView;
      break;
    case snapshots_v1::COMMITTED:
      s.kind = Kind::kCommitted;
      break;
    default:
      s.kind = Kind::kAbsent;
  }
  s.parent = info.parent();
  auto it = info.labels().find(kGenLabel);
  if (it != info.labels().end()) s.gen = it->second;
  return s;
}

std::string NewNonce() {
  std::random_device rd;
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                     static_cast<uint64_t>(::getpid());
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(r));
  return std::string(buf, 10);
}

// Writes file `name` into directory `dir` (an active snapshot's tree).
bool WriteTreeFile(const std::string& dir, const std::string& name,
                   std::string* error) {
  const std::string path = dir + "/" + name;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = absl::StrCat("open ", path, ": ", std::strerror(errno));
    return false;
  }
  const std::string content = name + "\n";
  const bool ok = ::write(fd, content.data(), content.size()) ==
                  static_cast<ssize_t>(content.size());
  if (!ok) *error = absl::StrCat("write ", path, ": ", std::strerror(errno));
  ::close(fd);
  return ok;
}

// Performs operations and journals them; shared by run, fixture and step.
class Driver {
 public:
  Driver(Client* client, Journal* journal, std::string owner)
      : client_(client), journal_(journal), owner_(std::move(owner)) {}

  // Performs `op` (its code is filled in), journals it and returns its
  // outcome. For a write, `op.arg` is the file name and the mount source is
  // asked first (that Mounts call is not journaled; an uncertain Mounts
  // makes the write uncertain but it is then not journaled: nothing
  // changed).
  Outcome Do(Op& op, std::string* detail = nullptr) {
    std::map<std::string, std::string> labels = {{kGenLabel, op.opid},
                                                 {kOwnerLabel, owner_}};
    const std::string parent = op.arg == "-" ? "" : op.arg;
    grpc::Status s;
    if (op.op == "prepare") {
      s = client_->Prepare(op.key, parent, labels, nullptr);
    } else if (op.op == "view") {
      s = client_->View(op.key, parent, labels);
    } else if (op.op == "commit") {
      s = client_->Commit(op.arg, op.key, labels);
    } else if (op.op == "remove") {
      s = client_->Remove(op.key);
    } else if (op.op == "update") {
      s = client_->UpdateLabel(op.key, kGenLabel, op.opid);
    } else if (op.op == "write") {
      std::string source;
      s = client_->MountSource(op.key, &source);
      if (!s.ok()) {
        op.code = CodeName(s.error_code());
        if (detail != nullptr) *detail = s.error_message();
        return Classify(op.code) == Outcome::kRefused ? Outcome::kRefused
                                                      : Outcome::kUncertain;
      }
      std::string error;
      if (!WriteTreeFile(source, op.arg, &error)) {
        op.code = "WRITE_FAILED";
        if (detail != nullptr) *detail = error;
        return Outcome::kRefused;
      }
    } else {
      std::fprintf(stderr, "crash_client: unknown op %s\n", op.op.c_str());
      std::exit(2);
    }
    op.code = CodeName(s.error_code());
    if (detail != nullptr) *detail = s.error_message();
    journal_->Append(FormatOp(op));
    return Classify(op.code);
  }

 private:
  Client* client_;
  Journal* journal_;
  std::string owner_;
};

// --------------------------------------------------------------------- run --

struct RunOptions {
  std::string address;
  std::string journal;
  int clients = 4;
  int ops = 100;
  uint64_t seed = 1;
  int keys = 32;
  std::string ready_file;
};

struct RunStats {
  std::atomic<int64_t> acknowledged{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> uncertain{0};
  std::atomic<int64_t> stats{0};
  std::atomic<int64_t> disagreements{0};
  std::array<std::atomic<int64_t>, 6> by_op{};
};

constexpr std::array<const char*, 6> kOpNames = {"prepare", "view",   "commit",
                                                 "remove",  "update", "write"};

std::string KeyName(int j) { return absl::StrCat("crash/k", j); }

class RunClient {
 public:
  RunClient(const RunOptions& o, int index, Client* client, Journal* journal,
            const std::string& nonce, const Model& initial,
            std::atomic<bool>* stop, RunStats* stats, std::mutex* out_mu)
      : o_(o),
        index_(index),
        driver_(client, journal, absl::StrCat(index)),
        client_(client),
        nonce_(nonce),
        rng_(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) + 1),
        stop_(stop),
        stats_(stats),
        out_mu_(out_mu) {
    for (int j = index; j < o.keys; j += o.clients) {
      owned_.push_back(KeyName(j));
      owned_set_.insert(KeyName(j));
      model_[KeyName(j)] = StateOf(initial, KeyName(j));
      if (j < SharedCount()) shared_own_.insert(KeyName(j));
    }
  }

  void Loop() {
    for (int i = 0; i < o_.ops && !stop_->load(); ++i) {
      if (!Step(i)) {
        stop_->store(true);
        return;
      }
    }
  }

 private:
  // Keys k0..k<S-1> are the shared parents other clients build on.
  int SharedCount() const { return std::max(1, std::min(o_.keys, o_.clients)); }

  double Uniform() {
    return std::uniform_real_distribution<double>(0, 1)(rng_);
  }
  template <typename C>
  auto Pick(const C& c) {
    auto it = c.begin();
    std::advance(it,
                 std::uniform_int_distribution<size_t>(0, c.size() - 1)(rng_));
    return *it;
  }
  std::vector<std::string> OwnOf(Kind kind) const {
    std::vector<std::string> out;
    for (const std::string& k : owned_) {
      if (StateOf(model_, k).kind == kind) out.push_back(k);
    }
    return out;
  }

  std::string PickParent() {
    const double r = Uniform();
    if (r < 0.2) return "";
    std::vector<std::string> own = OwnOf(Kind::kCommitted);
    if (r < 0.6 && !own.empty()) return Pick(own);
    // Another client's shared key: it may or may not be committed now.
    std::vector<std::string> foreign;
    for (int j = 0; j < SharedCount(); ++j) {
      if (!owned_set_.contains(KeyName(j))) foreign.push_back(KeyName(j));
    }
    if (foreign.empty()) return own.empty() ? "" : Pick(own);
    return Pick(foreign);
  }

  void Disagree(const std::string& what) {
    stats_->disagreements++;
    std::lock_guard<std::mutex> lock(*out_mu_);
    std::printf("violation: run: client %d: %s\n", index_, what.c_str());
    std::fflush(stdout);
  }

  // Whether a refusal of `op` is expected from the client's model.
  bool RefusalExpected(const Op& op) const {
    const std::string parent = op.arg == "-" ? "" : op.arg;
    if (op.op == "prepare" || op.op == "view") {
      // A foreign parent may be absent, not committed, or being changed.
      const bool own_parent = owned_set_.contains(parent);
      return !parent.empty() && !own_parent &&
             (op.code == "NOT_FOUND" || op.code == "INVALID_ARGUMENT");
    }
    if (op.op == "remove") {
      // A committed snapshot may have children (of any client).
      return StateOf(model_, op.key).kind == Kind::kCommitted &&
             op.code == "FAILED_PRECONDITION";
    }
    return false;
  }

  // One operation; false when the client must stop (uncertain result).
  bool Step(int i) {
    if (Uniform() < 0.1 && !StatCheck()) return false;
    Op op;
    op.opid = absl::StrCat(nonce_, ".", index_, ".", i);
    const std::string key = Pick(owned_);
    const KeyState st = StateOf(model_, key);
    const bool shared = shared_own_.contains(key);
    const double r = Uniform();
    std::vector<std::string> actives = OwnOf(Kind::kActive);
    std::vector<std::string> absents = OwnOf(Kind::kAbsent);
    switch (st.kind) {
      case Kind::kAbsent:
        if (!actives.empty() && (r < 0.15 || (shared && r < 0.6))) {
          op.op = "commit";
          op.key = Pick(actives);
          op.arg = key;
        } else if (r < 0.35) {
          op.op = "view";
          op.key = key;
        } else {
          op.op = "prepare";
          op.key = key;
        }
        if (op.op != "commit") {
          std::string p = PickParent();
          op.arg = p.empty() ? "-" : p;
        }
        break;
      case Kind::kActive:
        op.key = key;
        if (r < 0.3 && !absents.empty()) {
          op.op = "commit";
          op.arg = Pick(absents);
        } else if (r < 0.5) {
          op.op = "write";
          op.arg = absl::StrCat("f-", op.opid);
        } else if (r < 0.7) {
          op.op = "update";
        } else {
          op.op = "remove";
        }
        break;
      case Kind::kView:
        op.key = key;
        op.op = r < 0.5 ? "update" : "remove";
        break;
      case Kind::kCommitted:
        if (r < (shared ? 0.1 : 0.3)) {
          op.op = "remove";
          op.key = key;
        } else if (r < 0.5 || absents.empty()) {
          op.op = "update";
          op.key = key;
        } else {
          op.op = Uniform() < 0.8 ? "prepare" : "view";
          op.key = Pick(absents);
          op.arg = key;
        }
        break;
    }
    std::string detail;
    const Outcome outcome = driver_.Do(op, &detail);
    switch (outcome) {
      case Outcome::kOk:
        stats_->acknowledged++;
        for (size_t k = 0; k < kOpNames.size(); ++k) {
          if (op.op == kOpNames[k]) stats_->by_op[k]++;
        }
        Apply(model_, op);
        return true;
      case Outcome::kRefused:
        stats_->refused++;
        if (!RefusalExpected(op)) {
          Disagree(absl::StrCat(op.op, " ", op.key, " ", op.arg, " -> ",
                                op.code, " (", detail, "); model: ", op.key,
                                " is ", Describe(StateOf(model_, op.key))));
        }
        return true;
      case Outcome::kUncertain:
        stats_->uncertain++;
        return false;
    }
    return false;
  }

  // Stat of an own key must agree with the model.
  bool StatCheck() {
    const std::string key = Pick(owned_);
    snapshots_v1::Info info;
    grpc::Status s = client_->Stat(key, &info);
    const KeyState want_state = StateOf(model_, key);
    const Kind want = want_state.kind;
    stats_->stats++;
    if (s.ok()) {
      KeyState got = FromInfo(info);
      if (got.kind != want || got.gen != want_state.gen) {
        Disagree(absl::StrCat("stat ", key, ": daemon has ", Describe(got),
                              ", model ", Describe(want_state)));
      }
      return true;
    }
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      if (want != Kind::kAbsent) {
        Disagree(absl::StrCat("stat ", key, ": NOT_FOUND, model ",
                              Describe(want_state)));
      }
      return true;
    }
    return false;  // the daemon went away
  }

  const RunOptions& o_;
  const int index_;
  Driver driver_;
  Client* client_;
  const std::string nonce_;
  std::mt19937_64 rng_;
  std::atomic<bool>* stop_;
  RunStats* stats_;
  std::mutex* out_mu_;
  std::vector<std::string> owned_;
  std::set<std::string> owned_set_;
  std::set<std::string> shared_own_;
  Model model_;
};

int Run(const RunOptions& o) {
  Journal journal(o.journal);
  Client client(o.address);
  std::vector<snapshots_v1::Info> infos;
  grpc::Status s = client.List(&infos);
  if (!s.ok()) {
    std::printf(
        "run: cannot list snapshots (%s: %s); daemon gone, nothing done\n"
        "run: acknowledged=0 refused=0 uncertain=0 disagreements=0\n",
        CodeName(s.error_code()).c_str(), s.error_message().c_str());
    return 0;
  }
  Model initial;
  for (const auto& info : infos) initial[info.name()] = FromInfo(info);
  const std::string nonce = NewNonce();
  journal.Append(absl::StrCat("# run nonce=", nonce, " seed=", o.seed,
                              " clients=", o.clients, " ops=", o.ops,
                              " keys=", o.keys));
  if (!o.ready_file.empty()) {
    // Tells a waiting script that operations start now.
    int fd = ::open(o.ready_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) ::close(fd);
  }
  std::atomic<bool> stop{false};
  RunStats stats;
  std::mutex out_mu;
  std::vector<std::unique_ptr<RunClient>> clients;
  for (int c = 0; c < o.clients; ++c) {
    clients.push_back(std::make_unique<RunClient>(
        o, c, &client, &journal, nonce, initial, &stop, &stats, &out_mu));
  }
  {
    std::vector<std::jthread> threads;
    for (auto& c : clients) {
      threads.emplace_back([&c] { c->Loop(); });
    }
  }
  std::string by_op;
  for (size_t k = 0; k < kOpNames.size(); ++k) {
    absl::StrAppend(&by_op, " ", kOpNames[k], "=", stats.by_op[k].load());
  }
  std::printf(
      "run: acknowledged=%lld refused=%lld uncertain=%lld stats=%lld "
      "disagreements=%lld (%s)%s\n",
      static_cast<long long>(stats.acknowledged.load()),
      static_cast<long long>(stats.refused.load()),
      static_cast<long long>(stats.uncertain.load()),
      static_cast<long long>(stats.stats.load()),
      static_cast<long long>(stats.disagreements.load()), by_op.c_str() + 1,
      stop.load() ? " [stopped: daemon gone]" : "");
  return stats.disagreements.load() > 0 ? 1 : 0;
}

// ------------------------------------------------------------ fixture/step --

// The sweep's steps, each on its own fixture keys so that one fixture serves
// all of them in sequence (the trace run).
struct StepSpec {
  const char* name;
  const char* op;
  const char* key;
  const char* arg;
};
constexpr std::array<StepSpec, 9> kSteps = {{
    {"prepare", "prepare", "fx/new", "fx/base"},
    {"prepare-noparent", "prepare", "fx/new-root", "-"},
    {"view", "view", "fx/new-view", "fx/base"},
    {"commit", "commit", "fx/active", "fx/committed"},
    {"remove-active", "remove", "fx/rm-active", "-"},
    {"remove-committed", "remove", "fx/rm-committed", "-"},
    {"remove-view", "remove", "fx/rm-view", "-"},
    {"update", "update", "fx/upd", "-"},
    {"write", "write", "fx/wr", "-"},
}};
// Read-only and maintenance calls, for the trace run only (they journal
// nothing).
constexpr std::array<const char*, 2> kExtraSteps = {"read", "cleanup"};

int Fixture(const std::string& address, const std::string& journal_path) {
  Journal journal(journal_path);
  Client client(address);
  Driver driver(&client, &journal, "fixture");
  const std::string nonce = NewNonce();
  journal.Append(absl::StrCat("# fixture nonce=", nonce));
  int n = 0;
  auto id = [&] { return absl::StrCat(nonce, ".fx.", n++); };
  const std::vector<std::array<std::string, 3>> plan = {
      {"prepare", "fx/base-a", "-"},
      {"write", "fx/base-a", ""},
      {"commit", "fx/base-a", "fx/base"},
      {"prepare", "fx/active", "fx/base"},
      {"write", "fx/active", ""},
      {"prepare", "fx/rm-active", "fx/base"},
      {"prepare", "fx/c2-a", "fx/base"},
      {"commit", "fx/c2-a", "fx/rm-committed"},
      {"view", "fx/rm-view", "fx/base"},
      {"prepare", "fx/upd", "-"},
      {"prepare", "fx/wr", "fx/base"},
  };
  for (const auto& [opname, key, arg] : plan) {
    Op op;
    op.opid = id();
    op.op = opname;
    op.key = key;
    op.arg = opname == "write" ? absl::StrCat("f-", op.opid) : arg;
    std::string detail;
    if (driver.Do(op, &detail) != Outcome::kOk) {
      std::printf("fixture: %s %s %s -> %s (%s)\n", op.op.c_str(),
                  op.key.c_str(), op.arg.c_str(), op.code.c_str(),
                  detail.c_str());
      return 1;
    }
  }
  std::printf("fixture: %zu operations acknowledged\n", plan.size());
  return 0;
}

// Exit status: 0 acknowledged, 1 refused, 3 uncertain (the daemon died).
int Step(const std::string& address, const std::string& journal_path,
         const std::string& name) {
  Client client(address);
  if (name == "read" || name == "cleanup") {
    grpc::Status s;
    if (name == "cleanup") {
      s = client.Cleanup();
    } else {
      snapshots_v1::Info info;
      std::vector<snapshots_v1::Info> infos;
      std::string source;
      s = client.Stat("fx/base", &info);
      if (s.ok()) s = client.MountSource("fx/upd", &source);
      if (s.ok()) s = client.Usage("fx/upd");
      if (s.ok()) s = client.List(&infos);
    }
    std::printf("step: op=%s code=%s\n", name.c_str(),
                CodeName(s.error_code()).c_str());
    return s.ok()                                                    ? 0
           : Classify(CodeName(s.error_code())) == Outcome::kRefused ? 1
                                                                     : 3;
  }
  const StepSpec* spec = nullptr;
  for (const StepSpec& s : kSteps) {
    if (name == s.name) spec = &s;
  }
  if (spec == nullptr) {
    std::fprintf(stderr, "crash_client: unknown step %s\n", name.c_str());
    return 2;
  }
  Journal journal(journal_path);
  Driver driver(&client, &journal, "step");
  Op op;
  op.opid = absl::StrCat(NewNonce(), ".step");
  op.op = spec->op;
  op.key = spec->key;
  op.arg = std::string(spec->op) == "write" ? absl::StrCat("f-", op.opid)
                                            : spec->arg;
  std::string detail;
  const Outcome outcome = driver.Do(op, &detail);
  std::printf("step: op=%s opid=%s code=%s%s%s\n", name.c_str(),
              op.opid.c_str(), op.code.c_str(), detail.empty() ? "" : " ",
              detail.c_str());
  switch (outcome) {
    case Outcome::kOk:
      return 0;
    case Outcome::kRefused:
      return 1;
    case Outcome::kUncertain:
      return 3;
  }
  return 3;
}

// ------------------------------------------------------------------- check --

struct Pending {
  Op op;
  Model pre;   // states of the touched keys before
  Model post;  // and after
};

class Checker {
 public:
  // backend: "native", "overlayfs" or "remote", the backend the daemon ran
  // with; remote_address: the remote backend's downstream (which must be
  // serving: the check lists snapledger's objects there and reads their
  // trees through mounts it asks for).
  Checker(std::string root, std::string journal_path, bool resolve,
          std::string backend, std::string remote_address)
      : root_(std::move(root)),
        journal_path_(std::move(journal_path)),
        resolve_(resolve),
        overlay_(backend == "overlayfs"),
        remote_(backend == "remote"),
        remote_address_(std::move(remote_address)) {}

  int Run() {
    if (!ReplayJournal()) return Finish();
    if (!LoadLedger()) return Finish();
    if (!LoadBackend()) return Finish();
    CheckInvariants();
    CheckJournal();
    return Finish();
  }

 private:
  void Violation(const std::string& what) {
    ++violations_;
    std::printf("violation: %s\n", what.c_str());
  }

  bool ReplayJournal() {
    std::ifstream in(journal_path_);
    if (!in) {
      Violation(absl::StrCat("cannot read journal ", journal_path_));
      return false;
    }
    std::vector<Op> ops;
    std::map<std::string, bool> resolved;  // opid -> applied
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f[0] == "O" && f.size() == 6) {
        ops.push_back(Op{f[1], f[2], f[3], f[4], f[5]});
      } else if (f[0] == "R" && f.size() == 3) {
        resolved[f[1]] = f[2] == "applied";
      } else {
        // A torn last line cannot happen (one write per line, the writer is
        // never killed); anything malformed is a harness bug.
        Violation(absl::StrCat("journal line ", lineno, " malformed: ", line));
      }
    }
    for (const Op& op : ops) {
      ++replayed_;
      for (const std::string& k : Touched(op)) {
        auto it = pending_by_key_.find(k);
        if (it != pending_by_key_.end()) {
          Violation(absl::StrCat("journal: ", op.op, " ", op.key,
                                 " follows unresolved uncertain op ",
                                 it->second, " on ", k));
          pending_by_key_.erase(it);
        }
      }
      switch (Classify(op.code)) {
        case Outcome::kOk:
          ++acknowledged_;
          Apply(model_, op);
          break;
        case Outcome::kRefused:
          break;
        case Outcome::kUncertain: {
          auto r = resolved.find(op.opid);
          if (r != resolved.end()) {
            if (r->second) Apply(model_, op);
            break;
          }
          Pending p{op, {}, {}};
          for (const std::string& k : Touched(op)) {
            p.pre[k] = StateOf(model_, k);
          }
          Model after = model_;
          Apply(after, op);
          for (const std::string& k : Touched(op)) {
            p.post[k] = StateOf(after, k);
            pending_by_key_[k] = op.opid;
          }
          pending_.push_back(std::move(p));
          break;
        }
      }
    }
    for (const auto& [k, s] : model_) {
      if (s.kind != Kind::kAbsent) journal_keys_.insert(k);
    }
    return true;
  }

  bool LoadLedger() {
    snapledger::Ledger::Options options{.path = root_ + "/ledger",
                                        .read_only = true};
    auto ledger = snapledger::Ledger::Open(options);
    if (!ledger.ok()) {
      Violation(absl::StrCat("cannot open the ledger read-only: ",
                             ledger.status().ToString()));
      return false;
    }
    ledger_ = *std::move(ledger);
    absl::Status s = ledger_->ForEach([&](const snapledger::Record& r) {
      records_[r.key()] = r;
      return true;
    });
    if (!s.ok()) {
      Violation(absl::StrCat("ledger scan failed: ", s.ToString()));
      return false;
    }
    return true;
  }

  bool LoadBackend() {
    if (remote_) return LoadRemoteBackend();
    // Opened only to List(): no support check (it would mount), no sync.
    auto backend = overlay_
                       ? snapledger::NewOverlayBackend(
                             root_, {.sync = false, .skip_support_check = true})
                       : snapledger::NewNativeBackend(root_);
    if (!backend.ok()) {
      Violation(absl::StrCat("cannot open the ",
                             overlay_ ? "overlayfs" : "native",
                             " backend: ", backend.status().ToString()));
      return false;
    }
    auto objects = (*backend)->List();
    if (!objects.ok()) {
      Violation(
          absl::StrCat("backend List failed: ", objects.status().ToString()));
      return false;
    }
    for (const snapledger::BackendObject& o : *objects) {
      objects_[o.id] = o.parent_id;
    }
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(root_ + "/snapshots", ec)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("new-") || name.starts_with("rm-")) {
        Violation(
            absl::StrCat("backend temporary ", name, " survived recovery"));
      }
    }
    if (ec) {
      Violation(
          absl::StrCat("cannot list ", root_, "/snapshots: ", ec.message()));
    }
    return true;
  }

  // The remote backend's objects: snapledger's names in the downstream's
  // List (the remote backend maps them back to ids).
  bool LoadRemoteBackend() {
    auto backend = snapledger::NewRemoteBackend(
        {.address = remote_address_, .call_timeout = absl::Seconds(30)});
    if (!backend.ok()) {
      Violation(absl::StrCat("cannot reach the downstream at ", remote_address_,
                             ": ", backend.status().ToString()));
      return false;
    }
    auto objects = (*backend)->List();
    if (!objects.ok()) {
      Violation(absl::StrCat("downstream List failed: ",
                             objects.status().ToString()));
      return false;
    }
    for (const snapledger::BackendObject& o : *objects) {
      objects_[o.id] = o.parent_id;
    }
    std::string path = remote_address_;
    for (std::string_view scheme : {"unix://", "unix:"}) {
      if (path.starts_with(scheme)) {
        path = path.substr(scheme.size());
        break;
      }
    }
    downstream_ = std::make_unique<Client>(path);
    return true;
  }

  // The directory holding object `id`'s tree in the downstream: an active
  // object's own mount, or a committed one's as a view shows it (a view
  // made for the look and removed again, under a name outside snapledger's
  // prefix, which snapledger never touches).
  std::string RemoteTree(uint64_t id) {
    std::string dir;
    if (downstream_->MountSource(snapledger::RemoteActiveName(id), &dir).ok()) {
      return dir;
    }
    const std::string view = absl::StrCat("crash-check/", id);
    grpc::Status s =
        downstream_->View(view, snapledger::RemoteCommittedName(id), {}, &dir);
    if (!s.ok()) {
      Violation(absl::StrCat("cannot look into downstream object ", id, ": ",
                             s.error_message()));
      return "";
    }
    (void)downstream_->Remove(view);
    return dir;
  }

  // f-* files at the top of object `id`'s tree.
  std::set<std::string> TreeFiles(uint64_t id) {
    auto it = tree_cache_.find(id);
    if (it != tree_cache_.end()) return it->second;
    std::set<std::string> files;
    std::error_code ec;
    const std::string dir = remote_
                                ? RemoteTree(id)
                                : absl::StrCat(root_, "/snapshots/", id, "/fs");
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("f-")) files.insert(name);
    }
    tree_cache_[id] = files;
    return files;
  }

  void CheckInvariants() {
    using snapledger::store::v1::State;
    std::map<uint64_t, std::string> by_id;
    for (const auto& [key, r] : records_) {
      // (c) no intent survives recovery; MISSING is data loss here.
      switch (r.state()) {
        case snapledger::store::v1::LIVE:
          break;
        case snapledger::store::v1::PREPARING:
        case snapledger::store::v1::COMMITTING:
        case snapledger::store::v1::REMOVING:
          Violation(absl::StrCat("record ", key, " left in intent state ",
                                 State_Name(r.state()), " after recovery"));
          break;
        case snapledger::store::v1::MISSING:
          Violation(absl::StrCat("record ", key, " is MISSING (backend object ",
                                 r.backend_id(), " lost): ", r.last_error()));
          break;
        case snapledger::store::v1::ADOPTED:
          // Every object here comes from a journaled operation: one that
          // recovery had to adopt lost its record.
          Violation(absl::StrCat("record ", key,
                                 ": recovery adopted backend "
                                 "object ",
                                 r.backend_id(),
                                 ", which had no ledger record"));
          break;
        default:
          Violation(absl::StrCat("record ", key, " has state ",
                                 static_cast<int>(r.state())));
      }
      // Backend ids are never shared.
      auto [it, fresh] = by_id.emplace(r.backend_id(), key);
      if (!fresh) {
        Violation(absl::StrCat("records ", it->second, " and ", key,
                               " share backend id ", r.backend_id()));
      }
      // (b) a live record has its object, with the recorded parent.
      if (r.state() == snapledger::store::v1::LIVE) {
        auto o = objects_.find(r.backend_id());
        if (o == objects_.end()) {
          Violation(absl::StrCat("live record ", key, " has no backend object ",
                                 r.backend_id()));
        } else if (o->second != r.parent_backend_id()) {
          Violation(absl::StrCat("record ", key, ": backend object ",
                                 r.backend_id(), " has parent ", o->second,
                                 ", record says ", r.parent_backend_id()));
        }
      }
      // (d) the parent exists, is committed, and is the recorded object.
      if (!r.parent().empty()) {
        auto p = records_.find(r.parent());
        if (p == records_.end()) {
          Violation(absl::StrCat("record ", key, " names parent ", r.parent(),
                                 ", which has no record"));
        } else {
          if (p->second.kind() != snapledger::store::v1::COMMITTED) {
            Violation(absl::StrCat("record ", key, " has parent ", r.parent(),
                                   ", which is not committed"));
          }
          if (p->second.backend_id() != r.parent_backend_id()) {
            Violation(absl::StrCat("record ", key, " has parent_backend_id ",
                                   r.parent_backend_id(), " but parent ",
                                   r.parent(), " is object ",
                                   p->second.backend_id()));
          }
          // native: a copied tree holds everything its parent's holds.
          // overlayfs: nothing is copied, the parent is stacked under the
          // object at mount time: its own layer holds none of the parent's
          // files (each f-<opid> is written once, into one snapshot).
          if (r.kind() != snapledger::store::v1::VIEW &&
              objects_.contains(r.backend_id()) &&
              objects_.contains(p->second.backend_id())) {
            std::set<std::string> mine = TreeFiles(r.backend_id());
            for (const std::string& f : TreeFiles(p->second.backend_id())) {
              if (!overlay_ && !mine.contains(f)) {
                Violation(absl::StrCat("record ", key, ": tree lacks ", f,
                                       " of its parent ", r.parent()));
                break;
              }
              if (overlay_ && mine.contains(f)) {
                Violation(absl::StrCat("record ", key, ": its own layer holds ",
                                       f, " of its parent ", r.parent(),
                                       " (copied, not stacked)"));
                break;
              }
            }
          }
        }
        // The children index (by the parent's object id) lists it.
        auto children = ledger_->Children(r.parent_backend_id());
        if (!children.ok() || std::find(children->begin(), children->end(),
                                        key) == children->end()) {
          Violation(absl::StrCat("children index of ", r.parent(), " (object ",
                                 r.parent_backend_id(), ") does not list ",
                                 key));
        }
      }
    }
    // No stale children index entries (they would block Remove forever),
    // under any id handed out so far, live or not.
    uint64_t max_id = 0;
    for (const auto& [key, r] : records_) {
      max_id = std::max(max_id, r.backend_id());
    }
    if (!objects_.empty()) max_id = std::max(max_id, objects_.rbegin()->first);
    for (uint64_t id = 1; id <= max_id; ++id) {
      auto children = ledger_->Children(id);
      if (!children.ok()) {
        Violation(absl::StrCat("children index scan of object ", id, ": ",
                               children.status().ToString()));
        continue;
      }
      for (const std::string& c : *children) {
        auto cr = records_.find(c);
        if (cr == records_.end() || cr->second.parent_backend_id() != id) {
          Violation(absl::StrCat("children index of object ", id, " lists ", c,
                                 ", which is not its child"));
        }
      }
    }
    // (a) every backend object has a record.
    for (const auto& [id, parent] : objects_) {
      if (!by_id.contains(id)) {
        Violation(absl::StrCat("backend object ", id, " (parent ", parent,
                               ") has no ledger record"));
      }
    }
  }

  // Whether key's ledger state matches `want`; `why` says how not.
  bool Matches(const std::string& key, const KeyState& want, std::string* why) {
    auto it = records_.find(key);
    if (want.kind == Kind::kAbsent) {
      if (it == records_.end()) return true;
      *why = absl::StrCat("ledger has ", Actual(it->second));
      return false;
    }
    if (it == records_.end()) {
      *why = "ledger has no record";
      return false;
    }
    const snapledger::Record& r = it->second;
    KeyState got = FromRecord(r);
    if (got.kind != want.kind || got.parent != want.parent ||
        got.gen != want.gen) {
      *why = absl::StrCat("ledger has ", Actual(r));
      return false;
    }
    if (!want.files.empty()) {
      std::set<std::string> files = TreeFiles(r.backend_id());
      for (const std::string& f : want.files) {
        if (!files.contains(f)) {
          *why = absl::StrCat("tree of object ", r.backend_id(), " lacks ", f);
          return false;
        }
      }
    }
    return true;
  }

  static KeyState FromRecord(const snapledger::Record& r) {
    KeyState s;
    switch (r.kind()) {
      case snapledger::store::v1::ACTIVE:
        s.kind = Kind::kActive;
        break;
      case snapledger::store::v1::VIEW:
        s.kind = Kind::kView;
        break;
      case snapledger::store::v1::COMMITTED:
        s.kind = Kind::kCommitted;
        break;
      default:
        s.kind = Kind::kAbsent;
    }
    s.parent = r.parent();
    auto it = r.labels().find(kGenLabel);
    if (it != r.labels().end()) s.gen = it->second;
    return s;
  }

  static std::string Actual(const snapledger::Record& r) {
    return absl::StrCat(Describe(FromRecord(r)), " state ",
                        snapledger::store::v1::State_Name(r.state()),
                        " object ", r.backend_id());
  }

  void CheckJournal() {
    std::set<std::string> keys = journal_keys_;
    for (const auto& [k, r] : records_) {
      // Adopted records are reported by CheckInvariants.
      if (r.state() != snapledger::store::v1::ADOPTED) keys.insert(k);
    }
    for (const std::string& k : keys) {
      if (pending_by_key_.contains(k)) continue;
      const KeyState want = StateOf(model_, k);
      std::string why;
      if (!Matches(k, want, &why)) {
        Violation(absl::StrCat("journal: ", k, " should be ", Describe(want),
                               ": ", why));
      }
    }
    // (e) an operation whose outcome the client never learned happened
    // entirely or not at all.
    for (const Pending& p : pending_) {
      std::string why_pre, why_post;
      bool pre = true, post = true;
      for (const auto& [k, s] : p.pre) pre = pre && Matches(k, s, &why_pre);
      for (const auto& [k, s] : p.post) post = post && Matches(k, s, &why_post);
      const std::string what =
          absl::StrCat(p.op.opid, " ", p.op.op, " ", p.op.key, " ", p.op.arg,
                       " (", p.op.code, ")");
      if (!pre && !post) {
        Violation(absl::StrCat("not all-or-nothing: ", what,
                               ": neither before (", why_pre, ") nor after (",
                               why_post, ")"));
        continue;
      }
      // pre && post cannot both hold: every op changes a gen or a kind.
      const bool applied = post;
      ++(applied ? applied_ : rolled_back_);
      std::printf("resolved: %s -> %s\n", what.c_str(),
                  applied ? "applied" : "rolled-back");
      resolutions_.push_back(absl::StrCat("R ", p.op.opid, " ",
                                          applied ? "applied" : "rolled-back"));
    }
  }

  int Finish() {
    if (violations_ == 0 && resolve_ && !resolutions_.empty()) {
      Journal journal(journal_path_);
      for (const std::string& line : resolutions_) journal.Append(line);
    }
    std::printf(
        "check: %zu records, %zu backend objects, %lld journal ops "
        "(%lld acknowledged), %zu uncertain resolved (%d applied, %d "
        "rolled back), %d violations\n",
        records_.size(), objects_.size(), static_cast<long long>(replayed_),
        static_cast<long long>(acknowledged_), pending_.size(), applied_,
        rolled_back_, violations_);
    return violations_ > 0 ? 1 : 0;
  }

  const std::string root_;
  const std::string journal_path_;
  const bool resolve_;
  const bool overlay_;
  const bool remote_;
  const std::string remote_address_;
  std::unique_ptr<Client> downstream_;  // remote only
  int violations_ = 0;
  int64_t replayed_ = 0;
  int64_t acknowledged_ = 0;
  int applied_ = 0;
  int rolled_back_ = 0;
  Model model_;
  std::set<std::string> journal_keys_;  // present in the model
  std::vector<Pending> pending_;
  std::map<std::string, std::string> pending_by_key_;  // key -> opid
  std::vector<std::string> resolutions_;
  std::unique_ptr<snapledger::Ledger> ledger_;
  std::map<std::string, snapledger::Record> records_;
  std::map<uint64_t, uint64_t> objects_;  // id -> parent id
  std::map<uint64_t, std::set<std::string>> tree_cache_;
};

}  // namespace
}  // namespace crash

int main(int argc, char** argv) {
  CLI::App app{
      "crash_client: workload driver and offline checker for snapledger's "
      "crash-consistency tests (tests/crash/README.md)",
      "crash_client"};
  app.require_subcommand(1);

  crash::RunOptions run;
  CLI::App* run_cmd = app.add_subcommand(
      "run", "concurrent random operations, journaled once answered");
  run_cmd->add_option("--address", run.address, "daemon socket")->required();
  run_cmd->add_option("--journal", run.journal, "journal file (appended)")
      ->required();
  run_cmd->add_option("--clients", run.clients, "concurrent clients")
      ->check(CLI::Range(1, 64));
  run_cmd->add_option("--ops", run.ops, "operations per client")
      ->check(CLI::PositiveNumber);
  run_cmd->add_option("--seed", run.seed, "workload seed");
  run_cmd->add_option("--keys", run.keys, "keys in the key space")
      ->check(CLI::Range(1, 100000));
  run_cmd->add_option("--ready-file", run.ready_file,
                      "created once connected, as operations start");

  std::string address, journal, root, step;
  CLI::App* fixture_cmd =
      app.add_subcommand("fixture", "create the sweep steps' snapshots");
  fixture_cmd->add_option("--address", address, "daemon socket")->required();
  fixture_cmd->add_option("--journal", journal, "journal file")->required();

  CLI::App* step_cmd = app.add_subcommand(
      "step", "one operation (exit 0 ok, 1 refused, 3 uncertain)");
  step_cmd->add_option("--address", address, "daemon socket")->required();
  step_cmd->add_option("--journal", journal, "journal file")->required();
  step_cmd->add_option("--op", step, "step name (see `steps`)")->required();

  CLI::App* steps_cmd = app.add_subcommand("steps", "list the step names");
  bool with_extra = false;
  steps_cmd->add_flag("--all", with_extra,
                      "include read-only steps (for the trace run)");

  bool no_resolve = false;
  CLI::App* check_cmd = app.add_subcommand(
      "check", "check ledger, backend and journal (daemon stopped)");
  check_cmd->add_option("--root", root, "daemon root")->required();
  check_cmd->add_option("--journal", journal, "journal file")->required();
  check_cmd->add_flag("--no-resolve", no_resolve,
                      "do not append resolutions of uncertain operations");
  std::string backend = "native";
  check_cmd->add_option("--backend", backend, "the daemon's backend")
      ->check(CLI::IsMember({"native", "overlayfs", "remote"}));
  std::string remote_address;
  check_cmd->add_option("--remote-address", remote_address,
                        "remote backend: the downstream's socket (serving)");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  if (*run_cmd) {
    if (run.keys < run.clients) {
      std::fprintf(stderr, "crash_client: --keys must be >= --clients\n");
      return 2;
    }
    return crash::Run(run);
  }
  if (*fixture_cmd) return crash::Fixture(address, journal);
  if (*step_cmd) return crash::Step(address, journal, step);
  if (*steps_cmd) {
    for (const auto& s : crash::kSteps) std::printf("%s\n", s.name);
    if (with_extra) {
      for (const char* s : crash::kExtraSteps) std::printf("%s\n", s);
    }
    return 0;
  }
  if (*check_cmd) {
    if ((backend == "remote") != !remote_address.empty()) {
      std::fprintf(stderr,
                   "crash_client: --remote-address goes with --backend remote "
                   "(and only with it)\n");
      return 2;
    }
    return crash::Checker(root, journal, !no_resolve, backend, remote_address)
        .Run();
  }
  return 2;
}
