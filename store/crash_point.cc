#include "store/crash_point.h"

#if defined(SNAPLEDGER_CRASH_POINTS)
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace snapledger::internal {

void CrashPoint(const char* name) {
  static const char* const armed = std::getenv("SNAPLEDGER_CRASH_AT");
  static const int trace_fd = [] {
    const char* path = std::getenv("SNAPLEDGER_CRASH_TRACE");
    return path == nullptr
               ? -1
               : ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }();
  if (trace_fd >= 0) {
    std::string line = std::string(name) + "\n";
    (void)!::write(trace_fd, line.data(), line.size());
  }
  if (armed != nullptr && std::strcmp(armed, name) == 0) {
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);  // not reached
  }
}

}  // namespace snapledger::internal
#endif
