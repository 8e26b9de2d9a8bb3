// The remote backend: snapledger as a proxy in front of another snapshotter
// (stargz, nydus, soci, overlaybd, containerd's own snapshotters served over
// gRPC, another snapledgerd), reached through its Snapshots gRPC service.
//
// Naming. The downstream never sees a client's key: object `id` is
// "snapledger/a/<id>" while active or a view and "snapledger/c/<id>" once
// committed (Commit renames it, as containerd's Commit does). Everything the
// downstream holds outside the "snapledger/" prefix is not snapledger's:
// List() skips it, and nothing here ever removes it.
//
// Calls map one to one (Create → Prepare/View, Commit → Commit, Remove →
// Remove, Mounts → Mounts, DiskUsage → Usage, Exists → Stat, List → List,
// Cleanup → Cleanup). Mounts and usage are the downstream's, unchanged.
// Labels containerd forwards (containerd.io/snapshot/*, snapshot.ref) reach
// the downstream; the snapshot.ref label is rewritten to the downstream name
// the object would be committed under ("snapledger/c/<id>"), so a remote
// snapshotter (stargz) that finds the layer available commits it there and
// answers AlreadyExists; CreateWithLabels then confirms the committed object
// and answers IsCommittedByBackend (plugin/backend/backend.h).
//
// Failures. Every call carries a deadline (call_timeout); a downstream that
// is down answers Unavailable at once (no wait for a connection), and the
// channel reconnects by itself with a short backoff. Remove answered
// FailedPrecondition by the downstream (busy: mounted, or children it knows
// of) stays FailedPrecondition, which the removal queue retries. Because
// many snapshotters (containerd's overlayfs and native) delete a mounted
// tree without a word, Remove first checks this process's mount table for
// the object's tree, remembered from its Prepare (or, for objects made
// before a restart, found from its mounts; a committed object's through a
// short-lived view "snapledger/probe/<id>" on it), and answers busy itself. The
// downstream's NotFound for an object is NotFound (MISSING for recovery and
// the reconciler, as with local storage).
//
// Thread-safety: all calls may run concurrently (gRPC stubs are
// thread-safe); the only shared state is the mounts cache under a mutex.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/backend/backend.h"

namespace snapledger {

struct RemoteBackendOptions {
  // The downstream Snapshots service (plugin/transport/transport.h:
  // "unix:///run/x/x.sock", "unix:/path" or a bare path).
  std::string address;
  // Deadline of each call to the downstream.
  absl::Duration call_timeout = absl::Seconds(30);
  // Sent as the requests' `snapshotter` field (proxy services ignore it).
  std::string snapshotter_name = "snapledger";
};

// The downstream names of object `id` (exposed for tests and tools).
std::string RemoteActiveName(uint64_t id);
std::string RemoteCommittedName(uint64_t id);

// Makes a backend that proxies `options.address`. Does not wait for the
// downstream: a downstream that is down makes calls fail (Unavailable), not
// the opening. InvalidArgument for an address no transport handles.
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> NewRemoteBackend(
    const RemoteBackendOptions& options);

}  // namespace snapledger
