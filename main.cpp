// main: composition root: flags, logging, store, engine, API, signals.
#include "api/controller.hpp"
#include "api/ctl.hpp"
#include "api/fleet.hpp"
#include "api/server.hpp"
#include "cli_options.hpp"
#include "relay/engine.hpp"
#include "service.hpp"
#include "store/database_lock.hpp"
#include "store/forward_store.hpp"

#include <asio/ip/address.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>

#include <unistd.h>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;  // the API listens on its loopback addresses only
  std::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

// Fleet mode's settings from the flags: nothing, with the line to print, when one is wrong.
std::optional<api::fleet::options> fleet_options(const cli_options& o, std::string& error) {
  api::fleet::options f;
  auto endpoints = store::etcd::parse_endpoints(o.etcd_endpoints, error);
  if (!endpoints) return std::nullopt;
  f.etcd.endpoints = std::move(*endpoints);
  f.etcd.ca_file = o.etcd_ca_file;
  f.etcd.cert_file = o.etcd_cert_file;
  f.etcd.key_file = o.etcd_key_file;
  f.prefix = o.etcd_prefix;
  f.host = o.host_name;
  if (f.host.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') {
      error = "cannot read the system's host name; pass --host-name";
      return std::nullopt;
    }
    f.host = name;
  }
  // USER:PASSWORD, as etcdctl's --user takes it: from the file, or from systemd's credential.
  std::optional<std::string> credentials;
  if (!o.etcd_credentials_file.empty()) {
    credentials = service::read_token_file(o.etcd_credentials_file, error, "--etcd-credentials-file");
    if (!credentials) return std::nullopt;
  } else {
    credentials = service::credential("etcd-credentials");
  }
  if (credentials) {
    const auto colon = credentials->find(':');
    if (colon == std::string::npos || colon == 0) {
      error = "etcd credentials must be one line USER:PASSWORD";
      return std::nullopt;
    }
    f.etcd.user = credentials->substr(0, colon);
    f.etcd.password = credentials->substr(colon + 1);
  }
  return f;
}

// Waits at most `limit` for one of `signals`; the signal, or 0 when none came.
int wait_signal(const sigset_t& signals, steady::duration limit) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(limit, steady::duration::zero()));
  timespec ts{static_cast<time_t>(ns.count() / 1'000'000'000), static_cast<long>(ns.count() % 1'000'000'000)};
  const int sig = sigtimedwait(&signals, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

const char* signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

// The STATUS= line systemctl status shows.
std::string summary(const relay::engine::census& c, const std::string& api_url) {
  return std::to_string(c.active) + " forwards active, " + std::to_string(c.error) + " in error, " +
         std::to_string(c.disabled) + " disabled, " + std::to_string(c.live) + " connections; API on " + api_url;
}

// The watchdog is fed only when every worker ran the stamp queued at the previous feed: a stuck
// data plane stops the feeding and systemd restarts the service. There is no timer thread for it.
class watchdog_feeder {
 public:
  watchdog_feeder(service::notifier& notify, relay::engine& engine) : notify_(notify), engine_(engine) {
    if (notify_.watchdog_interval()) pinged_ = engine_.ping();
  }
  // How long the main loop may sleep before feed() is due again.
  steady::duration tick() const {
    return notify_.watchdog_interval() ? std::min<steady::duration>(*notify_.watchdog_interval(), 1s) : 1s;
  }
  void feed() {
    if (!notify_.watchdog_interval()) return;
    if (engine_.answered(pinged_)) {
      notify_.watchdog();
      stalled_ = false;
    } else if (!stalled_) {
      spdlog::error("a data-plane worker has not answered for {} ms; the watchdog is not fed",
                    std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - pinged_).count());
      stalled_ = true;
    }
    if (!stalled_) pinged_ = engine_.ping();
  }

 private:
  service::notifier& notify_;
  relay::engine& engine_;
  steady::time_point pinged_{};
  bool stalled_ = false;
};

// Serves until SIGTERM or SIGINT, keeping STATUS= current and the watchdog fed; returns the signal.
int serve(const sigset_t& signals, service::notifier& notify, relay::engine& engine, watchdog_feeder& feeder,
          const std::string& api_url) {
  for (;;) {
    if (const int sig = wait_signal(signals, feeder.tick())) return sig;
    feeder.feed();
    notify.status(summary(engine.count(), api_url));
  }
}

// Live connections and sessions get until the deadline to finish; a second signal ends the wait.
void drain(const sigset_t& signals, service::notifier& notify, relay::engine& engine, watchdog_feeder& feeder,
           std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  auto last_feed = steady::now();
  for (;;) {
    const auto live = engine.count().live;
    if (live == 0) {
      spdlog::info("drained: no live connections left");
      return;
    }
    const auto left = deadline - steady::now();
    if (left <= steady::duration::zero()) {
      spdlog::info("drain timeout reached: closing {} live connections", live);
      return;
    }
    notify.status("draining: " + std::to_string(live) + " connections left");
    if (const int sig = wait_signal(signals, std::min<steady::duration>(left, 50ms))) {
      spdlog::info("received {} while draining: closing {} live connections now", signal_name(sig), live);
      return;
    }
    if (steady::now() - last_feed >= feeder.tick()) {
      feeder.feed();
      last_feed = steady::now();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // `portrelay ctl ...` is the API's client; anything else is the daemon's command line, as before.
  if (argc > 1 && std::string_view(argv[1]) == "ctl") {
    return api::run_ctl(std::vector<std::string>(argv + 2, argv + argc), std::cout, std::cerr);
  }
  auto parsed = parse_cli(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed.options) {
    std::cerr << "portrelay: " << parsed.error << " (see --help)\n";
    return 2;
  }
  const cli_options& o = *parsed.options;
  if (o.help) {
    std::cout << usage();
    return 0;
  }
  if (o.version) {
    std::cout << "portrelay " << PORTRELAY_VERSION << "\n";
    return 0;
  }

  api::server_options api_options{o.api_host, o.api_port, {}};
  if (!o.token_file.empty()) {
    std::string error;
    auto token = service::read_token_file(o.token_file, error);
    if (!token) {
      std::cerr << "portrelay: " << error << "\n";
      return 2;
    }
    api_options.token = *token;
  } else if (auto token = service::credential_token()) {
    api_options.token = *token;  // LoadCredential=token:... in the systemd unit
  }
  if (!is_loopback(o.api_host) && api_options.token.empty()) {
    std::cerr << "portrelay: refusing to serve the API on " << o.api_host
              << ", which is not a loopback address, without a token; pass --token-file FILE\n";
    return 2;
  }

  // Signals are taken by sigtimedwait in the serve and drain loops; every thread started from here
  // on inherits the block, so none of them is interrupted.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  service::setup_logging(o.log_level);
  try {
    store::database_lock db_lock(o.db);  // before anything opens the file; outlives the store
    store::forward_store store(o.db);
    relay::engine_options engine_options;
    engine_options.workers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    engine_options.connect_timeout = std::chrono::milliseconds(static_cast<long>(o.connect_timeout_s * 1000));
    engine_options.half_close_timeout = std::chrono::milliseconds(static_cast<long>(o.half_close_timeout_s * 1000));
    engine_options.datapath = o.datapath == "splice" ? relay::datapath::splice
                              : o.datapath == "copy" ? relay::datapath::copy
                                                     : relay::datapath::automatic;
    relay::engine engine(engine_options);
    api::controller controller(store, engine);
    // Fleet mode: after the controller, so that its threads end before the controller goes.
    std::unique_ptr<api::fleet> fleet;
    if (o.store == "etcd") {
      std::string error;
      auto fo = fleet_options(o, error);
      if (!fo) {
        std::cerr << "portrelay: " << error << "\n";
        return 2;
      }
      fleet = std::make_unique<api::fleet>(std::move(*fo));
      controller.join(*fleet);
    }
    api::server server(controller, api_options);

    service::notifier notify;
    server.bind();
    engine.set_api_endpoints(api::listen_addresses(o.api_host), server.port());  // before any forward serves
    controller.restore();
    db_lock.keep();  // from here on the API may write: the file is the operator's, whatever happens
    if (fleet) {
      // With a local copy the host serves it at once, etcd or not; a first start waits for the
      // shared set (a bounded time: then it serves what comes when etcd answers).
      const auto local = store.mirrored_revision();
      fleet->start(controller, local);
      if (local == 0 && !fleet->wait_synced(30s)) {
        spdlog::warn("etcd has not answered for 30 s and there is no local copy yet: serving no forwards until it does");
      }
    }
    server.start();
    const auto census = engine.count();
    spdlog::info("portrelay {} listening on {} ({} workers, {} forwards active, {} in error, database {})",
                 PORTRELAY_VERSION, server.url(), engine.workers(), census.active, census.error, o.db);
    notify.ready(summary(census, server.url()));

    watchdog_feeder feeder(notify, engine);
    const int sig = serve(stop_signals, notify, engine, feeder, server.url());
    // Stop taking new work everywhere at once, then let what is live finish.
    const auto live = engine.count().live;
    notify.stopping("stopping: draining " + std::to_string(live) + " connections");
    spdlog::info("received {}, stopping: draining {} live connections for up to {} s "
                 "(idle UDP sessions end after {} ms); a second SIGINT or SIGTERM stops at once",
                 signal_name(sig), live, o.drain_timeout_s, engine_options.udp_drain_idle_timeout.count());
    server.stop();
    if (fleet) fleet->stop();  // this host's status leaves the fleet now
    engine.drain();
    spdlog::info("listeners closed, no new connections are accepted");
    drain(stop_signals, notify, engine, feeder,
          std::chrono::milliseconds(static_cast<long>(o.drain_timeout_s * 1000)));
    engine.shutdown();
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  return 0;
}
