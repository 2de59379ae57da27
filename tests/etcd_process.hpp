// etcd_process: Debian's etcd (3.4) as a child of the test, a single member or a 3-member cluster on
// loopback, and etcdctl for what a test does to it from outside (compact, auth).
#pragma once

#include "child_process.hpp"

#include <nlohmann/json.hpp>

#include <sys/un.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace test {

inline const std::string etcd_binary = "/usr/bin/etcd";
inline const std::string etcdctl_binary = "/usr/bin/etcdctl";
// util-linux (essential in Debian): etcd gets SIGKILL when the test dies, so that a crashed or aborted
// test run leaves no etcd behind. The signal comes when the *thread* that started it ends.
inline const std::string setpriv_binary = "/usr/bin/setpriv";

struct program_result {
  int status = -1;     // the exit status; -1 when it did not exit by itself within io_timeout
  std::string output;  // stdout and stderr together
};

// Runs `program` to its end (bounded by io_timeout).
inline program_result run_program(const std::string& program, std::vector<std::string> args, child_env env = {},
                                  const std::string& cwd = {}) {
  child_process run(program, std::move(args), std::move(env), cwd);
  program_result r;
  const auto status = run.wait_exit(io_timeout);
  r.output = run.log();
  if (status && WIFEXITED(*status)) r.status = WEXITSTATUS(*status);
  return r;
}

using etcdctl_result = program_result;

// `etcdctl --endpoints=ENDPOINTS ARGS...` with API v3, e.g. etcdctl(node.endpoint(), {"compact", "5"}).
inline program_result etcdctl(const std::string& endpoints, std::vector<std::string> args) {
  args.insert(args.begin(), "--endpoints=" + endpoints);
  return run_program(etcdctl_binary, std::move(args), {.vars = {"ETCDCTL_API=3"}, .journal = false});
}

// A CA and, signed by it, a certificate for 127.0.0.1 that serves as etcd's and as a client's, all
// made by openssl in a directory of their own (P-256 keys, valid for a day).
struct etcd_certificates {
  temp_dir dir;
  std::filesystem::path ca() const { return dir.path / "ca.crt"; }
  std::filesystem::path cert() const { return dir.path / "node.crt"; }
  std::filesystem::path key() const { return dir.path / "node.key"; }

  etcd_certificates() {
    std::ofstream(dir.path / "ext.cnf") << "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n";
    const std::vector<std::vector<std::string>> steps{
        {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
         "-out", "ca.crt", "-days", "1", "-subj", "/CN=portrelay test CA"},
        {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "node.key", "-out",
         "node.csr", "-subj", "/CN=127.0.0.1"},
        {"x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "node.crt",
         "-days", "1", "-extfile", "ext.cnf"}};
    for (const auto& step : steps) {
      const auto r = run_program("/usr/bin/openssl", step, {}, dir.path.string());
      if (r.status != 0) throw std::runtime_error("openssl " + step[0] + " failed:\n" + r.output);
    }
  }
};

// TLS for an etcd member's TCP client URL (its unix socket stays plain HTTP).
struct etcd_tls {
  std::filesystem::path ca, cert, key;
  bool client_cert_auth = false;  // --client-cert-auth: clients must show a certificate the CA signed
};

// One HTTP/1.0 exchange with etcd's gateway on 127.0.0.1:port, or on `socket` when given (1.0, so
// the answer is never chunked and ends with the connection): the answer's body, or "" when nothing
// answered.
inline std::string etcd_http(std::uint16_t port, const std::string& method, const std::string& path,
                             const std::string& body = {}, const std::filesystem::path& socket = {}) {
  fd c;
  if (socket.empty()) {
    c = connect_to(port);
  } else {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const auto text = socket.string();
    if (text.size() >= sizeof a.sun_path) return {};
    text.copy(a.sun_path, text.size());
    c = fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    set_timeouts(c.get());
    if (::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  }
  if (!c) return {};
  const auto request = method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                       "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!send_all(c.get(), request)) return {};
  const auto answer = recv_all(c.get());
  const auto at = answer.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : answer.substr(at + 4);
}

// One etcd member with a data directory of its own, serving clients on 127.0.0.1:client_port and on
// the unix socket <dir>/localhost:2379 (etcd names the socket file after the URL's host:port and
// creates it in its working directory, which is the member's directory).
class etcd_node {
 public:
  struct member {
    std::string name;
    std::uint16_t client_port = 0;
    std::uint16_t peer_port = 0;
    std::string initial_cluster;  // "name=http://127.0.0.1:PEER,..." of every member
    std::string cluster_token;    // distinct per cluster, so that no two tests' members ever join up
    std::optional<etcd_tls> tls;  // https on the client port
  };

  // A single member on free ports, started and ready; throws (with etcd's log) when it is not.
  etcd_node() : etcd_node(std::optional<etcd_tls>()) {}
  // The same with https on the client port.
  explicit etcd_node(std::optional<etcd_tls> tls) : etcd_node(single(std::move(tls))) {
    start();
    if (!wait_ready()) throw std::runtime_error("etcd did not become ready:\n" + log());
  }
  // A member of a cluster; not started (a cluster's members start together and then need a quorum).
  explicit etcd_node(member m) : member_(std::move(m)) {}

  etcd_node(const etcd_node&) = delete;
  etcd_node& operator=(const etcd_node&) = delete;

  // Starts etcd on the member's data directory and ports (again, after stop() or kill()); does not
  // wait for it. Throws when it is running. Call it from a thread that outlives the member (see
  // setpriv_binary).
  void start() {
    if (running()) throw std::runtime_error("etcd " + member_.name + " is already running");
    const auto peer = "http://127.0.0.1:" + std::to_string(member_.peer_port);
    child_.reset();
    // A killed etcd leaves its socket file, and etcd 3.4 refuses to start on one ("address already in
    // use"); nothing else uses the member's directory.
    std::filesystem::remove(socket_path());
    std::vector<std::string> args{
        "--pdeathsig", "KILL", "--", etcd_binary, "--name", member_.name, "--data-dir", (dir_.path / "data").string(),
        "--listen-client-urls", endpoint() + ",unix://localhost:2379",
        "--advertise-client-urls", endpoint(),
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", member_.initial_cluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", member_.cluster_token,
        "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"};
    if (member_.tls) {
      args.insert(args.end(), {"--cert-file", member_.tls->cert.string(), "--key-file", member_.tls->key.string(),
                               "--trusted-ca-file", member_.tls->ca.string()});
      if (member_.tls->client_cert_auth) args.push_back("--client-cert-auth");
    }
    child_.emplace(setpriv_binary, std::move(args), child_env{}, dir_.path.string());
  }

  // Polls /health until it says true and the socket file exists (true), or until etcd exits or
  // `limit` passes (false).
  bool wait_ready(std::chrono::milliseconds limit = 30s) {
    return eventually([&] {
      if (!running()) return true;
      return std::filesystem::exists(socket_path()) &&
             etcd_http(member_.client_port, "GET", "/health", {}, socket_path()).find(R"("health":"true")") != std::string::npos;
    }, limit) && running();
  }

  // SIGTERM, then waits for the exit (SIGKILL after io_timeout).
  void stop() {
    if (!running()) return;
    child_->signal(SIGTERM);
    if (!child_->wait_exit(io_timeout)) kill();
  }
  // SIGKILL, then waits for the exit.
  void kill() {
    if (!running()) return;
    child_->signal(SIGKILL);
    child_->wait_exit(io_timeout);
  }

  bool running() { return child_ && !child_->exited(); }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  std::string log() const { return child_ ? child_->log() : std::string(); }
  const std::string& name() const { return member_.name; }
  std::uint16_t client_port() const { return member_.client_port; }
  const std::filesystem::path& dir() const { return dir_.path; }

  std::string endpoint() const {
    return (member_.tls ? "https" : "http") + std::string("://127.0.0.1:") + std::to_string(member_.client_port);
  }
  std::filesystem::path socket_path() const { return dir_.path / "localhost:2379"; }
  std::string unix_endpoint() const { return "unix://" + socket_path().string(); }

 private:
  static member single(std::optional<etcd_tls> tls) {
    const auto ports = free_ports(2);
    const auto peer = static_cast<std::uint16_t>(ports + 1);
    return {"node", ports, peer, "node=http://127.0.0.1:" + std::to_string(peer),
            "portrelay-test-" + std::to_string(ports), std::move(tls)};
  }

  member member_;
  temp_dir dir_;  // declared before child_: etcd is killed before its directory goes
  std::optional<child_process> child_;
};

// Three members on loopback, started together and each ready; throws (with their logs) when they
// do not form a cluster.
class etcd_cluster {
 public:
  static constexpr std::size_t size = 3;

  etcd_cluster() {
    const auto first = free_ports(2 * size);
    std::string initial;
    for (std::size_t i = 0; i < size; ++i) {
      initial += (i ? "," : "") + name(i) + "=http://127.0.0.1:" + std::to_string(first + 2 * i + 1);
    }
    for (std::size_t i = 0; i < size; ++i) {
      members_.push_back(std::make_unique<etcd_node>(etcd_node::member{
          name(i), static_cast<std::uint16_t>(first + 2 * i), static_cast<std::uint16_t>(first + 2 * i + 1), initial,
          "portrelay-test-" + std::to_string(first), std::nullopt}));
    }
    for (auto& m : members_) m->start();
    for (std::size_t i = 0; i < size; ++i) ensure_ready(i);
  }

  etcd_node& member(std::size_t i) { return *members_.at(i); }

  // Every member's client URL, comma-separated (the form --etcd-endpoints takes).
  std::string endpoints() const {
    std::string list;
    for (const auto& m : members_) list += (list.empty() ? "" : ",") + m->endpoint();
    return list;
  }

  // The index of the member that is the leader by its own status (a running member whose member_id
  // is the leader it reports); polls for one up to io_timeout, then throws.
  std::size_t leader() {
    std::optional<std::size_t> found;
    eventually([&] {
      for (std::size_t i = 0; i < size && !found; ++i) {
        if (!members_[i]->running()) continue;
        const auto body = etcd_http(members_[i]->client_port(), "POST", "/v3/maintenance/status", "{}");
        const auto status = nlohmann::json::parse(body, nullptr, false);
        if (!status.is_object() || !status.contains("leader")) continue;
        if (status["header"].value("member_id", "") == status.value("leader", "-")) found = i;
      }
      return found.has_value();
    }, io_timeout);
    if (!found) throw std::runtime_error("no etcd member is the leader");
    return *found;
  }

  void kill(std::size_t i) { member(i).kill(); }
  // Starts member i again on its data directory and waits until it is ready.
  void start(std::size_t i) {
    member(i).start();
    ensure_ready(i);
  }

 private:
  static std::string name(std::size_t i) { return "m" + std::to_string(i); }

  void ensure_ready(std::size_t i) {
    if (!member(i).wait_ready()) throw std::runtime_error("etcd member " + name(i) + " did not become ready:\n" + member(i).log());
  }

  std::vector<std::unique_ptr<etcd_node>> members_;
};

}  // namespace test
