// Named crash points for crash-consistency tests.
//
// CRASH_POINT("commit.after_backend") marks a place between two durable steps
// of a mutating operation. In builds configured with SNAPLEDGER_CRASH_POINTS
// (test builds only), the process kills itself with SIGKILL when the point's
// name equals the environment variable SNAPLEDGER_CRASH_AT; every point it
// passes is also appended to the file named by SNAPLEDGER_CRASH_TRACE, so a
// sweep can discover the points an operation crosses. In release builds the
// macro compiles to nothing.
#pragma once

#if defined(SNAPLEDGER_CRASH_POINTS)
namespace snapledger::internal {
// Thread-safe; reads the environment once.
void CrashPoint(const char* name);
}  // namespace snapledger::internal
#define CRASH_POINT(name) ::snapledger::internal::CrashPoint(name)
#else
#define CRASH_POINT(name) \
  do {                    \
  } while (false)
#endif
