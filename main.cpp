// main: composition root: flags, logging, store, engine, API, signals.
#include "api/controller.hpp"
#include "api/server.hpp"
#include "cli_options.hpp"
#include "relay/engine.hpp"
#include "store/forward_store.hpp"

#include <asio/ip/address.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace {

bool is_loopback(const std::string& host) {
  std::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

std::optional<std::string> read_token(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "--token-file: cannot read " + path;
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token = ss.str();
  const char* space = " \t\r\n";
  token.erase(0, token.find_first_not_of(space));
  token.erase(token.find_last_not_of(space) + 1);
  if (token.empty()) {
    error = "--token-file: " + path + " is empty";
    return std::nullopt;
  }
  return token;
}

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("portrelay");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace

int main(int argc, char** argv) {
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
    auto token = read_token(o.token_file, error);
    if (!token) {
      std::cerr << "portrelay: " << error << "\n";
      return 2;
    }
    api_options.token = *token;
  }
  if (!is_loopback(o.api_host) && api_options.token.empty()) {
    std::cerr << "portrelay: refusing to serve the API on " << o.api_host
              << ", which is not a loopback address, without a token; pass --token-file FILE\n";
    return 2;
  }

  // Signals are taken by sigwait below; every thread started from here on inherits the block.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  setup_logging(o.log_level);
  try {
    store::forward_store store(o.db);
    relay::engine_options engine_options;
    engine_options.workers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    engine_options.connect_timeout = std::chrono::milliseconds(static_cast<long>(o.connect_timeout_s * 1000));
    engine_options.half_close_timeout = std::chrono::milliseconds(static_cast<long>(o.half_close_timeout_s * 1000));
    relay::engine engine(engine_options);
    api::controller controller(store, engine);
    api::server server(controller, api_options);

    server.bind();
    controller.restore();
    server.start();
    auto [active, failed] = controller.counts();
    spdlog::info("portrelay {} listening on {} ({} workers, {} forwards active, {} in error, database {})",
                 PORTRELAY_VERSION, server.url(), engine.workers(), active, failed, o.db);

    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("received {}, stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
    engine.shutdown();
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  return 0;
}
