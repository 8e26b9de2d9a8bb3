// Unix domain sockets ("unix://<path>", "unix:<path>" or a bare path): the
// transport containerd uses for proxy plugins on Linux, and one gRPC C++ can
// also serve on Windows (AF_UNIX), where containerd itself only dials named
// pipes (docs/windows.md).
//
// Thread-safety: stateless.
#pragma once

#include "plugin/transport/transport.h"

namespace snapledger {

// The process's unix transport.
const Transport& UnixTransport();

}  // namespace snapledger
