#include "plugin/server/listener.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "grpc/support/log.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

// Failed accepts reported by gRPC, and the doctors' stop flags, under one
// mutex: a doctor waits for either to change.
absl::Mutex g_events_mu;
uint64_t g_accept_failures ABSL_GUARDED_BY(g_events_mu) = 0;

void RouteGrpcLog(gpr_log_func_args* args) {
  const char* message = args->message != nullptr ? args->message : "";
  if (absl::StartsWith(message, "Failed accept4")) {
    absl::MutexLock lock(&g_events_mu);
    ++g_accept_failures;
  }
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) {
    level = spdlog::level::warn;
  } else if (args->severity == GPR_LOG_SEVERITY_INFO) {
    level = spdlog::level::info;
  }
  spdlog::log(level, "grpc: {} ({}:{})", message,
              args->file != nullptr ? args->file : "?", args->line);
}

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

}  // namespace

void InstallGrpcLogRouting() { gpr_set_log_function(&RouteGrpcLog); }

uint64_t GrpcAcceptFailures() {
  absl::MutexLock lock(&g_events_mu);
  return g_accept_failures;
}

// --- Listener ---------------------------------------------------------------

Listener::Listener(std::string name, std::string path, mode_t umask,
                   SyncPollers pollers, MakeService make)
    : name_(std::move(name)),
      path_(std::move(path)),
      umask_(umask),
      pollers_(pollers),
      make_(std::move(make)) {}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Start(std::string name,
                                                          std::string path,
                                                          mode_t umask,
                                                          SyncPollers pollers,
                                                          MakeService make) {
  std::unique_ptr<Listener> listener(new Listener(
      std::move(name), std::move(path), umask, pollers, std::move(make)));
  std::unique_ptr<grpc::Service> service = listener->make_();
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = ServeOnUnixSocket(
      listener->path_, listener->umask_, service.get(), listener->pollers_);
  if (!server.ok()) return server.status();
  absl::MutexLock lock(&listener->mu_);
  listener->service_ = std::move(service);
  listener->server_ = *std::move(server);
  return listener;
}

Listener::~Listener() { Shutdown(absl::ZeroDuration()); }

bool Listener::Accepts(absl::Duration timeout) const {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix:" + path_, grpc::InsecureChannelCredentials());
  return channel->WaitForConnected(DeadlineIn(timeout));
}

absl::Status Listener::Restart(absl::Duration grace) {
  std::unique_ptr<grpc::Service> service = make_();
  std::unique_ptr<grpc::Server> old_server;
  std::unique_ptr<grpc::Service> old_service;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::CancelledError("listener stopped");
    absl::StatusOr<std::unique_ptr<grpc::Server>> server =
        ServeOnUnixSocket(path_, umask_, service.get(), pollers_,
                          /*replace_live=*/true);
    if (!server.ok()) return server.status();
    if ((*server)->GetHealthCheckService() != nullptr) {
      (*server)->GetHealthCheckService()->SetServingStatus(serving_);
    }
    old_server = std::exchange(server_, *std::move(server));
    old_service = std::exchange(service_, std::move(service));
    ++restarts_;
  }
  // The old server's socket file is gone (renamed over); its calls finish.
  old_server->Shutdown(DeadlineIn(grace));
  old_server->Wait();
  return absl::OkStatus();
}

void Listener::Shutdown(absl::Duration grace) {
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::Service> service;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    server = std::move(server_);
    service = std::move(service_);
  }
  if (server != nullptr) {
    server->Shutdown(DeadlineIn(grace));
    server->Wait();
  }
  ::unlink(path_.c_str());
}

void Listener::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  serving_ = serving;
  if (server_ != nullptr && server_->GetHealthCheckService() != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(serving);
  }
}

int Listener::restarts() const {
  absl::MutexLock lock(&mu_);
  return restarts_;
}

// --- ListenerDoctor ---------------------------------------------------------

ListenerDoctor::ListenerDoctor(std::vector<Listener*> listeners,
                               ListenerDoctorOptions options)
    : listeners_(std::move(listeners)), options_(options) {}

ListenerDoctor::~ListenerDoctor() { Stop(); }

void ListenerDoctor::Start() {
  absl::MutexLock lock(&g_events_mu);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void ListenerDoctor::Stop() {
  {
    absl::MutexLock lock(&g_events_mu);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool ListenerDoctor::CheckAll() {
  bool all = true;
  for (Listener* listener : listeners_) {
    if (listener->Accepts(options_.probe_timeout)) continue;
    spdlog::warn("{} socket {} does not accept connections; serving it anew",
                 listener->name(), listener->path());
    if (absl::Status s = listener->Restart(options_.grace); !s.ok()) {
      spdlog::warn("cannot serve {} socket {} anew yet: {}", listener->name(),
                   listener->path(), s.ToString());
      all = false;
      continue;
    }
    all = all && listener->Accepts(options_.probe_timeout);
    spdlog::info("{} socket {} accepts again", listener->name(),
                 listener->path());
  }
  return all;
}

void ListenerDoctor::UpdateServing(bool accepting) {
  std::string reason;
  if (!accepting) {
    reason = "a socket does not accept connections";
  } else if (options_.health) {
    if (absl::Status s = options_.health(); !s.ok()) {
      reason = std::string(s.message());
    }
  }
  const bool serving = reason.empty();
  if (serving == serving_ && reason == not_serving_reason_) return;
  if (serving) {
    spdlog::info("health: SERVING again");
  } else {
    spdlog::warn("health: NOT_SERVING: {}", reason);
  }
  serving_ = serving;
  not_serving_reason_ = std::move(reason);
  for (Listener* listener : listeners_) listener->SetServing(serving);
}

void ListenerDoctor::Run() {
  uint64_t seen = GrpcAcceptFailures();
  absl::Duration retry = options_.retry_min;
  bool healthy = true;
  absl::Time next_probe = absl::Now() + options_.probe_interval;
  while (true) {
    bool probe = false;
    {
      absl::MutexLock lock(&g_events_mu);
      auto woken = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_events_mu) {
        return stop_ || g_accept_failures != seen;
      };
      g_events_mu.AwaitWithDeadline(
          absl::Condition(&woken),
          std::min(next_probe, absl::Now() + options_.health_interval));
      if (stop_) return;
      probe = g_accept_failures != seen || absl::Now() >= next_probe;
      seen = g_accept_failures;
    }
    if (probe) {
      healthy = CheckAll();
      retry = healthy ? options_.retry_min
                      : std::min(retry * 2, options_.retry_max);
      next_probe = absl::Now() + (healthy ? options_.probe_interval : retry);
    }
    UpdateServing(healthy);
    if (options_.trim_interval > absl::ZeroDuration() &&
        absl::Now() >= next_trim_) {
      ::malloc_trim(0);
      next_trim_ = absl::Now() + options_.trim_interval;
    }
  }
}

}  // namespace snapledger
