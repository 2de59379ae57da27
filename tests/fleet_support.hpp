// fleet_support: portrelay hosts of a fleet as real processes, each in a network namespace of its own
// with its API on 127.0.0.1:7410 and an echo target there, reached from inside that namespace; and a
// link to etcd that a test can cut for one host.
#pragma once

#include "daemon_process.hpp"
#include "etcd_process.hpp"
#include "netns.hpp"

#include <sys/un.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace test {

// One answer of a host's API. status 0: nothing answered (refused, reset or io_timeout).
struct api_answer {
  int status = 0;
  nlohmann::json body;  // the parsed body; null when it is empty or not JSON
  std::string text;     // the body as sent
  httplib::Headers headers;

  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  // The body's error.code ("conflict", "store_unreachable"...), or "" when it has none.
  std::string error_code() const {
    if (!body.is_object() || !body.contains("error") || !body["error"].is_object()) return {};
    return body["error"].value("code", "");
  }
};

// A TCP forward from 127.0.0.1:listen_port (0: the host that takes the write picks) to
// 127.0.0.1:target_port, as POST /api/v1/forwards takes it.
inline nlohmann::json tcp_forward(std::uint16_t target_port, std::uint16_t listen_port = 0) {
  return {{"protocol", "tcp"},         {"listen_host", "127.0.0.1"}, {"listen_port", listen_port},
          {"target_host", "127.0.0.1"}, {"target_port", target_port}};
}

struct fleet_host_options {
  std::string name;            // --host-name: 1-63 of [A-Za-z0-9._-]
  std::string etcd_endpoints;  // --etcd-endpoints; empty: a single host on SQLite, without fleet flags
  std::string etcd_prefix = "/portrelay/e2e";
};

// A portrelay process in a network namespace of its own, on its own database (the local copy in
// fleet mode), with its API on 127.0.0.1:7410 inside that namespace. Killed, stopped and started
// again, it stays in the same namespace on the same database.
class fleet_host {
 public:
  static constexpr std::uint16_t api_port = 7410;

  // Starts it; throws (with its log) when it does not report ready.
  explicit fleet_host(fleet_host_options o) : options_(std::move(o)) {
    if (!start()) throw std::runtime_error("host " + options_.name + " did not start:\n" + log());
  }

  // Starts the daemon (again), and waits for its start-up line: false when it exited or stayed silent
  // instead, or when it is already running.
  bool start() {
    if (proc_ && !proc_->exited()) return false;
    if (proc_) earlier_logs_ += proc_->log() + "---- " + options_.name + " started again\n";
    proc_.reset();
    in_netns(ns_, [&] { proc_.emplace(args()); });
    return proc_->wait_ready() == api_port;
  }
  // SIGTERM; true when it exited with status 0 within io_timeout.
  bool stop() {
    proc_->signal(SIGTERM);
    const auto st = proc_->wait_exit(io_timeout);
    return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
  }
  // SIGKILL, and waits for the end.
  void kill() {
    proc_->signal(SIGKILL);
    proc_->wait_exit(io_timeout);
  }
  void signal(int sig) { proc_->signal(sig); }
  bool running() { return proc_ && !proc_->exited(); }
  pid_t pid() const { return proc_->pid(); }

  // Every run's log, in order.
  std::string log() const { return earlier_logs_ + (proc_ ? proc_->log() : std::string()); }
  const std::string& name() const { return options_.name; }
  const netns& ns() const { return ns_; }

  // The API, asked from inside the host's namespace on a connection of each call's own.
  api_answer get(const std::string& path) {
    return ask([&](httplib::Client& c) { return c.Get(path.c_str()); });
  }
  api_answer post(const std::string& path, const nlohmann::json& body) {
    return ask([&](httplib::Client& c) { return c.Post(path.c_str(), body.dump(), "application/json"); });
  }
  api_answer patch(const std::string& path, const nlohmann::json& body, const httplib::Headers& headers = {}) {
    return ask([&](httplib::Client& c) { return c.Patch(path.c_str(), headers, body.dump(), "application/json"); });
  }
  api_answer del(const std::string& path) {
    return ask([&](httplib::Client& c) { return c.Delete(path.c_str()); });
  }

  // Through a forward on 127.0.0.1:port in this namespace: what echo_once would answer, and a
  // connection (empty when refused) that may then be used from any thread.
  std::string echo(std::uint16_t port, const std::string& text) {
    return in_netns(ns_, [&] { return echo_once(port, text); });
  }
  fd connect(std::uint16_t port) {
    return in_netns(ns_, [&] { return connect_to(port); });
  }
  // A plain TCP listener on 127.0.0.1:port in this namespace (empty when the port is taken there).
  fd occupy(std::uint16_t port) {
    return in_netns(ns_, [&] { return bound_on("127.0.0.1", port, false); });
  }
  // An echo target (target_server::echo) on 127.0.0.1:port in this namespace (0: the kernel picks),
  // kept as long as the host; its port.
  std::uint16_t serve_echo(std::uint16_t port = 0) {
    echo_.push_back(
        in_netns(ns_, [&] { return std::make_unique<target_server>(target_server::echo, "127.0.0.1", port); }));
    return echo_.back()->port();
  }

 private:
  std::vector<std::string> args() const {
    std::vector<std::string> a{"--db", (dir_.path / "p.db").string(), "--api", "127.0.0.1:" + std::to_string(api_port),
                               "--workers", "2"};
    if (!options_.etcd_endpoints.empty()) {
      a.insert(a.end(), {"--store", "etcd", "--etcd-endpoints", options_.etcd_endpoints, "--etcd-prefix",
                         options_.etcd_prefix, "--host-name", options_.name});
    }
    return a;
  }

  api_answer ask(const std::function<httplib::Result(httplib::Client&)>& send) {
    return in_netns(ns_, [&] {
      httplib::Client c("127.0.0.1", api_port);
      const auto limit = std::chrono::duration_cast<std::chrono::seconds>(io_timeout).count();
      c.set_connection_timeout(limit);
      c.set_read_timeout(limit);
      c.set_write_timeout(limit);
      api_answer a;
      auto r = send(c);
      if (!r) return a;
      a.status = r->status;
      a.text = r->body;
      a.headers = r->headers;
      a.body = nlohmann::json::parse(r->body, nullptr, false);
      if (a.body.is_discarded()) a.body = nullptr;
      return a;
    });
  }

  fleet_host_options options_;
  netns ns_;
  temp_dir dir_;
  std::vector<std::unique_ptr<target_server>> echo_;  // before proc_: the daemon goes first
  std::optional<daemon_process> proc_;
  std::string earlier_logs_;
};

// Hosts "a", "b", "c"... of one fleet, host i given --etcd-endpoints endpoints[i], each with an echo
// target on the same port in its namespace (so that one forward relays to it on every host).
struct fleet {
  std::vector<std::unique_ptr<fleet_host>> hosts;
  std::uint16_t echo_port = 0;

  explicit fleet(const std::vector<std::string>& endpoints) {
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
      const std::string name(1, static_cast<char>('a' + i));
      hosts.push_back(std::make_unique<fleet_host>(fleet_host_options{name, endpoints[i]}));
      echo_port = hosts.back()->serve_echo(echo_port);
    }
  }
  fleet_host& operator[](std::size_t i) { return *hosts.at(i); }
  // Every host's log, for a failure's message.
  std::string logs() const {
    std::string all;
    for (const auto& h : hosts) all += "==== host " + h->name() + "\n" + h->log();
    return all;
  }
};

// The unix socket endpoints of a cluster's members, comma-separated: hosts in namespaces of their own
// cannot reach its loopback ports.
inline std::string unix_endpoints(etcd_cluster& cluster) {
  std::string list;
  for (std::size_t i = 0; i < etcd_cluster::size; ++i) list += (i ? "," : "") + cluster.member(i).unix_endpoint();
  return list;
}

inline sockaddr_un unix_address(const std::filesystem::path& p) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (p.string().size() >= sizeof a.sun_path) throw std::runtime_error("socket path too long: " + p.string());
  std::strncpy(a.sun_path, p.c_str(), sizeof a.sun_path - 1);
  return a;
}

// Connects to a Unix socket (with io_timeout on send and receive), or returns an empty fd.
inline fd connect_unix(const std::filesystem::path& p) {
  const auto a = unix_address(p);
  fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return fd();
  return s;
}

// A relay from a Unix socket of its own to etcd's, for one host: cut() closes every connection through
// it and then each new one at once, as a partition between that host and etcd looks to the host, while
// etcd and the other hosts go on; restore() ends the partition.
class etcd_link {
 public:
  etcd_link(std::filesystem::path path, std::filesystem::path etcd_socket)
      : path_(std::move(path)), etcd_socket_(std::move(etcd_socket)) {
    listener_ = fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto a = unix_address(path_);
    if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener_.get(), 64) != 0) {
      throw std::runtime_error("etcd_link: cannot listen on " + path_.string());
    }
    thread_ = std::thread([this] { run(); });
  }
  ~etcd_link() {
    stop_ = true;
    thread_.join();
    std::filesystem::remove(path_);
  }

  std::string endpoint() const { return "unix://" + path_.string(); }
  // Both return once the link's thread has done it.
  void cut() { set(true); }
  void restore() { set(false); }

 private:
  struct pair {
    fd host, etcd;
  };

  void set(bool cut) {
    wanted_cut_ = cut;
    if (!eventually([&] { return cut_ == cut; }, io_timeout)) throw std::runtime_error("etcd_link did not follow");
  }

  void run() {
    std::vector<pair> pairs;
    while (!stop_) {
      if (wanted_cut_ != cut_) {
        if (wanted_cut_) pairs.clear();
        cut_ = wanted_cut_.load();
      }
      std::vector<pollfd> polled{{listener_.get(), POLLIN, 0}};
      for (const auto& p : pairs) {
        polled.push_back({p.host.get(), POLLIN, 0});
        polled.push_back({p.etcd.get(), POLLIN, 0});
      }
      if (::poll(polled.data(), polled.size(), 20) <= 0) continue;
      std::vector<bool> dead(pairs.size(), false);
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        for (int side = 0; side < 2 && !dead[i]; ++side) {
          if (!polled[1 + 2 * i + side].revents) continue;
          const int from = side == 0 ? pairs[i].host.get() : pairs[i].etcd.get();
          const int to = side == 0 ? pairs[i].etcd.get() : pairs[i].host.get();
          char buf[65536];
          const auto n = ::recv(from, buf, sizeof buf, MSG_DONTWAIT);
          if (n > 0) {
            dead[i] = !send_all(to, buf, static_cast<std::size_t>(n));
          } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            dead[i] = true;  // HTTP needs no half-close: either end closing ends the pair
          }
        }
      }
      for (std::size_t i = pairs.size(); i-- > 0;) {
        if (dead[i]) pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(i));
      }
      if (polled[0].revents & POLLIN) {
        fd host(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!host || cut_) continue;  // a cut link closes it at once
        auto etcd = connect_unix(etcd_socket_);
        if (!etcd) continue;
        set_timeouts(host.get());
        pairs.push_back({std::move(host), std::move(etcd)});
      }
    }
  }

  std::filesystem::path path_, etcd_socket_;
  fd listener_;
  std::atomic<bool> wanted_cut_{false}, cut_{false}, stop_{false};
  std::thread thread_;
};

}  // namespace test
