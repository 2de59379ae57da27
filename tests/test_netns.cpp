// The fleet tests' harness itself: network namespaces, and portrelay hosts in them (single hosts here,
// on SQLite, so that the harness is proven apart from fleet mode).
#include "fleet_support.hpp"

#include <catch2/catch.hpp>

using namespace test;

namespace {
std::string namespace_of(const std::string& proc_dir) {
  return std::filesystem::read_symlink(proc_dir + "/ns/net").string();
}
std::string this_threads_namespace() { return namespace_of("/proc/thread-self"); }
}  // namespace

TEST_CASE("in_netns runs code in its namespace, the same one each time, and passes on results and exceptions", "[e2e]") {
  netns one, two;
  const auto outside = this_threads_namespace();
  const auto first = in_netns(one, this_threads_namespace);
  CHECK(first != outside);
  CHECK(in_netns(one, this_threads_namespace) == first);
  CHECK(in_netns(two, this_threads_namespace) != first);
  CHECK(this_threads_namespace() == outside);  // the caller's thread never moves

  // A listener made in one is reached there and only there, from any thread once connected.
  std::uint16_t port = 0;
  auto listener = in_netns(one, [&] { return listen_on(port); });
  CHECK(!in_netns(two, [&] { return connect_to(port); }));
  auto client = in_netns(one, [&] { return connect_to(port); });
  REQUIRE(client);
  fd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(accepted);
  set_timeouts(accepted.get());
  CHECK(send_all(client.get(), "across"));
  CHECK(recv_exact(accepted.get(), 6) == "across");

  CHECK_THROWS_WITH(in_netns(one, []() -> int { throw std::runtime_error("thrown inside"); }), "thrown inside");
}

TEST_CASE("hosts in namespaces of their own share the API and forward ports, each reached in its own only", "[e2e]") {
  fleet hosts({"", ""});  // two single hosts on SQLite: no fleet flags
  auto& a = hosts[0];
  auto& b = hosts[1];
  INFO(hosts.logs());
  REQUIRE(a.get("/api/v1/forwards").status == 200);

  auto created = a.post("/api/v1/forwards", tcp_forward(hosts.echo_port));
  REQUIRE(created.status == 201);
  const std::uint16_t port = created.body["listen_port"];
  CHECK(a.echo(port, "on a") == "on a");
  CHECK(b.echo(port, "on b") == "<refused>");
  CHECK(b.get("/api/v1/forwards").body.empty());

  // The same port in b's namespace is free: b takes it for a forward of its own.
  REQUIRE(b.post("/api/v1/forwards", tcp_forward(hosts.echo_port, port)).status == 201);
  auto held = b.connect(port);
  REQUIRE(held);
  CHECK(send_all(held.get(), "held"));
  CHECK(recv_exact(held.get(), 4) == "held");

  // Killed and started again on its database, a comes back in the same namespace with its forward.
  a.kill();
  CHECK(a.echo(port, "down") == "<refused>");
  REQUIRE(a.start());
  CHECK(namespace_of("/proc/" + std::to_string(a.pid())) == in_netns(a.ns(), this_threads_namespace));
  CHECK(a.echo(port, "back") == "back");
  CHECK(send_all(held.get(), "still"));  // b never noticed
  CHECK(recv_exact(held.get(), 5) == "still");

  held.reset();
  CHECK(a.stop());
  CHECK(b.stop());
}

TEST_CASE("etcd's unix socket is reached from any namespace - an etcd_link relays to it until cut, and again once restored", "[e2e]") {
  etcd_node etcd;
  netns elsewhere;
  REQUIRE(etcdctl(etcd.unix_endpoint(), {"put", "k", "v1"}).status == 0);
  const auto seen =
      in_netns(elsewhere, [&] { return etcdctl(etcd.unix_endpoint(), {"get", "k", "--print-value-only"}); });
  CHECK(seen.status == 0);
  CHECK(seen.output == "v1\n");

  temp_dir dir;
  etcd_link link(dir.path / "link.sock", etcd.socket_path());
  const auto through = in_netns(elsewhere, [&] { return etcdctl(link.endpoint(), {"put", "k", "v2"}); });
  INFO(through.output);
  CHECK(through.status == 0);
  const auto health = [&] {
    auto c = connect_unix(dir.path / "link.sock");
    return c && send_all(c.get(), "GET /health HTTP/1.0\r\n\r\n") ? recv_all(c.get()) : std::string();
  };
  CHECK(health().find(R"("health":"true")") != std::string::npos);

  auto open = connect_unix(dir.path / "link.sock");
  REQUIRE(open);
  link.cut();
  CHECK(closed_by_peer(open.get()));  // what was open is closed
  CHECK(health().empty());            // and what comes is closed at once
  link.restore();
  CHECK(health().find(R"("health":"true")") != std::string::npos);
  CHECK(etcdctl(link.endpoint(), {"get", "k", "--print-value-only"}).output == "v2\n");
}
