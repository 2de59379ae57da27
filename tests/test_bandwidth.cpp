// Bandwidth limits over real loopback sockets through the engine: the token bucket, the rate a
// limit holds on both TCP datapaths (one and eight connections, each direction), a change of the
// limit reaching live connections, directions and forwards without a limit, and UDP datagrams over
// the limit. The timed cases ([.bandwidth], ten seconds and more each) run once in CI, from
// scripts/test.sh; the quick ones show that a limit limits at all.
#include "engine_helpers.hpp"
#include "relay/bandwidth.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>

#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

using namespace test;

namespace {

using steady = std::chrono::steady_clock;
constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * kib;

double seconds_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

const char* name_of(relay::datapath p) {
  return p == relay::datapath::splice ? "splice" : p == relay::datapath::copy ? "copy" : "automatic";
}

// A forward to `target_port` limited to `up` and `down` bytes/s (nothing: that direction is not).
relay::forward_spec limited(std::int64_t id, std::uint16_t target_port, std::optional<std::uint64_t> up,
                            std::optional<std::uint64_t> down, std::optional<std::uint64_t> burst = std::nullopt) {
  auto s = spec_for(id, target_port);
  if (up || down) s.bandwidth_limit = relay::bandwidth_limit_spec{up, down, burst};
  return s;
}

// The spec again, with its listen port, applied to the live forward as a PATCH would.
relay::forward_spec change_limit(relay::engine& e, relay::forward_spec s,
                                 std::optional<relay::bandwidth_limit_spec> limit) {
  s.bandwidth_limit = limit;
  return start(e, s);
}

bool send_repeated(int s, std::uint64_t n) {
  static const std::string block = random_bytes(64 * kib, 16);
  while (n > 0) {
    const auto part = std::min<std::uint64_t>(n, block.size());
    if (!send_all(s, block.data(), part)) return false;
    n -= part;
  }
  return true;
}

// `total` bytes through a forward in one direction, over `connections` connections at once. Up:
// each client sends its share and half-closes, and the target counts what arrives; down: each
// client asks with one byte, and the target sends its share and closes. The receiving side counts
// every byte as it comes (received(), for rates mid-transfer).
class bulk_transfer {
 public:
  bulk_transfer(bool up, int connections, std::uint64_t total)
      : up_(up), connections_(connections), share_(total / static_cast<std::uint64_t>(connections)),
        target_([this](int s) { serve(s); }) {}

  std::uint16_t target_port() const { return target_.port(); }
  std::uint64_t total() const { return share_ * static_cast<std::uint64_t>(connections_); }
  std::uint64_t received() const { return received_.load(); }
  bool finished() const { return done_.load(); }

  // Moves total() through the forward on `port`: the seconds from the first byte sent to the last
  // received, or nothing when bytes went missing (a connection failed, or was closed first).
  std::optional<double> run(std::uint16_t port) {
    std::vector<fd> clients;
    for (int i = 0; i < connections_; ++i) {
      clients.push_back(connect_to(port));
      if (!clients.back()) return std::nullopt;
    }
    const auto start = steady::now();
    std::atomic<bool> whole{true};
    std::vector<std::thread> threads;
    for (const auto& c : clients) {
      threads.emplace_back([this, &whole, s = c.get()] {
        if (!client(s)) whole = false;
      });
    }
    for (auto& t : threads) t.join();
    if (!whole || !eventually([&] { return done_.load(); })) return std::nullopt;
    return seconds_between(start, last_byte_.load());
  }

 private:
  bool client(int s) {
    if (up_) {
      if (!send_repeated(s, share_)) return false;
      ::shutdown(s, SHUT_WR);
      bool eof = false;
      return recv_all(s, &eof).empty() && eof;  // the target's end, once it has read all
    }
    return send_all(s, "g") && count_to_end(s) == share_;
  }

  void serve(int s) {
    if (up_) {
      count_to_end(s);
      return;
    }
    char go;
    if (::recv(s, &go, 1, 0) == 1) send_repeated(s, share_);
  }

  std::uint64_t count_to_end(int s) {
    char buf[64 * 1024];
    std::uint64_t n = 0;
    for (;;) {
      const auto r = ::recv(s, buf, sizeof buf, 0);
      if (r <= 0) return n;
      n += static_cast<std::uint64_t>(r);
      if (received_.fetch_add(static_cast<std::uint64_t>(r)) + static_cast<std::uint64_t>(r) == total()) {
        last_byte_ = steady::now();
        done_ = true;
      }
    }
  }

  const bool up_;
  const int connections_;
  const std::uint64_t share_;
  std::atomic<std::uint64_t> received_{0};
  std::atomic<steady::time_point> last_byte_{};
  std::atomic<bool> done_{false};
  target_server target_;  // last: its threads use the members above
};

// One transfer of a batch run at once: which datapath, which way, on how many connections, and
// whether its forward has a limit that way.
struct scenario {
  relay::datapath path;
  bool up;
  int connections;
  bool limited = true;
  std::string name() const {
    return std::string(name_of(path)) + (up ? " up" : " down") + " on " + std::to_string(connections) +
           " connection" + (connections > 1 ? "s" : "") + (limited ? "" : " without a limit");
  }
};

// Runs every scenario at once, each through its own forward (limited to `rate` bytes/s its way, or
// not at all), in one engine per datapath, each moving `total` bytes; the seconds each took, or nothing.
std::vector<std::optional<double>> run_at_once(const std::vector<scenario>& scenarios, std::uint64_t rate,
                                               std::optional<std::uint64_t> burst, std::uint64_t total) {
  std::map<relay::datapath, std::unique_ptr<relay::engine>> engines;
  std::vector<std::unique_ptr<bulk_transfer>> transfers;
  std::vector<std::uint16_t> ports;
  std::int64_t id = 0;
  for (const auto& s : scenarios) {
    auto& e = engines[s.path];
    if (!e) e = std::make_unique<relay::engine>(fast_options(30s, s.path));
    transfers.push_back(std::make_unique<bulk_transfer>(s.up, s.connections, total));
    const auto limit = s.limited ? std::optional<std::uint64_t>(rate) : std::nullopt;
    ports.push_back(start(*e, limited(++id, transfers.back()->target_port(), s.up ? limit : std::nullopt,
                                      s.up ? std::nullopt : limit, burst))
                        .listen_port);
  }
  std::vector<std::optional<double>> took(scenarios.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    threads.emplace_back([&, i] { took[i] = transfers[i]->run(ports[i]); });
  }
  for (auto& t : threads) t.join();
  return took;
}

}  // namespace

TEST_CASE("the token bucket: grants up to what it holds - gives back - says how long until more", "[engine]") {
  relay::token_bucket b;
  CHECK_FALSE(b.limited());
  CHECK(b.take(1 << 30) == 1u << 30);  // unlimited: all, always
  CHECK(b.take_all(1 << 30));
  CHECK(b.time_until(1 << 30) == steady::duration::zero());

  // 1 KiB/s: a 4 KiB chunk takes four seconds to come, far longer than this case runs.
  b.set(1024, 64 * kib);
  REQUIRE(b.limited());
  CHECK(b.take(1 * mib) == 64 * kib);  // a new limit starts with a full bucket, and no more
  CHECK(b.take(1 * mib) == 0);         // less than a chunk held: nothing
  const auto wait = b.time_until(1 * mib);
  CHECK(wait > 3s);
  CHECK(wait <= 4s);
  b.give_back(10 * kib);
  CHECK(b.time_until(1 * mib) == steady::duration::zero());
  const auto granted = b.take(1 * mib);
  CHECK(granted >= 10 * kib);
  CHECK(granted < 11 * kib);
  CHECK_FALSE(b.take_all(5 * kib));  // a datagram is taken whole or not at all
  b.give_back(5 * kib);
  CHECK(b.take_all(5 * kib));

  // A change keeps what the bucket holds, within the new burst; lifting it grants all again.
  b.give_back(64 * kib);
  b.set(1 * mib, 128 * kib);
  CHECK(b.take(1 * mib) < 100 * kib);  // 64 KiB kept, and what flowed in since (not the new burst)
  b.set(std::nullopt, 0);
  CHECK_FALSE(b.limited());
  CHECK(b.take(1 * mib) == 1 * mib);
}

TEST_CASE("a limited transfer of three bursts takes two seconds - each datapath each way", "[tcp]") {
  // 64 KiB/s with a 64 KiB burst: 192 KiB take 2 s (the first 64 KiB at once). Without a limit they
  // take milliseconds.
  std::vector<scenario> scenarios;
  for (const auto path : {relay::datapath::splice, relay::datapath::copy, relay::datapath::automatic}) {
    for (const bool up : {true, false}) scenarios.push_back({path, up, 1});
  }
  const auto took = run_at_once(scenarios, 64 * kib, 64 * kib, 192 * kib);
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    INFO(scenarios[i].name());
    REQUIRE(took[i]);
    CHECK(*took[i] >= 1.5);
    CHECK(*took[i] < 10);
  }
}

TEST_CASE("a connection accepted before the limit is held to it - and runs free once it is lifted", "[tcp]") {
  const auto path = GENERATE(relay::datapath::splice, relay::datapath::copy);
  INFO("datapath: " << name_of(path));
  std::atomic<std::uint64_t> received{0};
  target_server target([&](int s) {
    char buf[64 * 1024];
    for (;;) {
      const auto r = ::recv(s, buf, sizeof buf, 0);
      if (r <= 0) return;
      received += static_cast<std::uint64_t>(r);
    }
  });
  relay::engine engine(fast_options(30s, path));
  auto s = start(engine, limited(1, target.port(), std::nullopt, std::nullopt));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  REQUIRE(send_repeated(c.get(), 1 * mib));  // relayed at once: nothing limits it yet
  REQUIRE(eventually([&] { return received == 1 * mib; }));

  s = change_limit(engine, s, relay::bandwidth_limit_spec{64 * kib, std::nullopt, 64 * kib});
  auto t0 = steady::now();
  REQUIRE(send_repeated(c.get(), 192 * kib));
  REQUIRE(eventually([&] { return received == 1 * mib + 192 * kib; }));
  CHECK(seconds_between(t0, steady::now()) >= 1.5);

  // 16 MiB at the old limit would take over four minutes.
  s = change_limit(engine, s, std::nullopt);
  std::thread sender([&] { send_repeated(c.get(), 16 * mib); });
  const bool in_time = eventually([&] { return received == 17 * mib + 192 * kib; }, 20s);
  ::shutdown(c.get(), SHUT_RDWR);  // ends the sender, if something still holds it back
  sender.join();
  CHECK(in_time);
}

TEST_CASE("a limited connection whose client resets ends at once - not at the limit's pace", "[tcp]") {
  const auto path = GENERATE(relay::datapath::splice, relay::datapath::copy);
  INFO("datapath: " << name_of(path));
  target_server target([](int s) { read_to_end(s); });
  relay::engine engine(fast_options(30s, path));
  // 1 KiB/s up: the 1 MiB the client leaves behind would take seventeen minutes.
  const auto s = start(engine, limited(1, target.port(), relay::min_rate_bytes_per_s, std::nullopt));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  int fl = ::fcntl(c.get(), F_GETFL);
  ::fcntl(c.get(), F_SETFL, fl | O_NONBLOCK);
  const std::string block(64 * kib, 'r');
  std::uint64_t sent = 0;
  for (int i = 0; i < 16; ++i) {
    const auto n = ::send(c.get(), block.data(), block.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::uint64_t>(n);
  }
  REQUIRE(sent > 256 * kib);
  REQUIRE(eventually([&] { return engine.status(1).stats.connections_active == 1; }));
  reset(c);
  // The reset is passed on now: the slot and both descriptors are given back.
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }, 20s));
}

TEST_CASE("the direction without a limit is not slowed by the other's", "[tcp]") {
  const auto path = GENERATE(relay::datapath::splice, relay::datapath::copy);
  INFO("datapath: " << name_of(path));
  // Down at 64 KiB/s: 16 MiB would take over four minutes that way.
  bulk_transfer upload(true, 1, 16 * mib);
  relay::engine engine(fast_options(30s, path));
  const auto s = start(engine, limited(1, upload.target_port(), std::nullopt, 64 * kib));
  std::thread run([&] { upload.run(s.listen_port); });
  const bool in_time = eventually([&] { return upload.finished(); }, 20s);
  engine.remove(1);  // ends the transfer, if something still holds it back
  run.join();
  CHECK(in_time);
}

TEST_CASE("UDP datagrams over the limit are dropped whole and counted - each way", "[udp]") {
  const bool up = GENERATE(true, false);
  INFO((up ? "up" : "down"));
  udp_echo_server target;
  relay::engine engine(fast_options());
  // 1 KiB/s and a 64 KiB burst: two 30,000-byte datagrams fit, the next two do not (what flows in
  // meanwhile is a few bytes), and a 5,000-byte one fits what is left.
  auto spec = limited(1, target.port(), up ? std::optional<std::uint64_t>(1024) : std::nullopt,
                      up ? std::nullopt : std::optional<std::uint64_t>(1024), 64 * kib);
  spec.protocol = relay::protocol::udp;
  const auto s = start(engine, spec);
  auto c = udp_client(s.listen_port);
  const std::string big(30000, 'b');
  for (int i = 0; i < 4; ++i) REQUIRE(::send(c.get(), big.data(), big.size(), 0) == 30000);
  CHECK(recv_datagram(c.get()) == big);
  CHECK(recv_datagram(c.get()) == big);
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_dropped == 2; }));
  const std::string small(5000, 's');
  REQUIRE(send_all(c.get(), small));
  CHECK(recv_datagram(c.get()) == small);
  CHECK(recv_datagram(c.get(), 200ms).empty());  // the two dropped ones never come
  const auto st = engine.status(1).stats;
  CHECK(st.datagrams_dropped == 2);
  CHECK(st.datagrams_up == (up ? 3u : 5u));
  CHECK(st.datagrams_down == 3);
}

// The timed cases: hidden from the quick suite, run once by scripts/test.sh (normal build only).

TEST_CASE("a limit holds within 10 percent over 10 s - one and eight connections - up and down - splice and copy",
          "[tcp][.bandwidth]") {
  // 1 MiB/s and its default burst: 10 s worth plus the burst take 10 s. Eight transfers at once, each
  // through its own forward, and one through a forward without a limit beside them.
  constexpr std::uint64_t rate = 1 * mib;
  const auto burst = relay::burst_bytes_for({}, rate);
  std::vector<scenario> scenarios;
  for (const auto path : {relay::datapath::splice, relay::datapath::copy}) {
    for (const bool up : {true, false}) {
      for (const int connections : {1, 8}) scenarios.push_back({path, up, connections});
    }
  }
  scenarios.push_back({relay::datapath::splice, true, 8, false});
  const auto took = run_at_once(scenarios, rate, std::nullopt, 10 * rate + burst);
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    INFO(scenarios[i].name());
    REQUIRE(took[i]);
    UNSCOPED_INFO(scenarios[i].name() << ": " << *took[i] << " s");
    if (scenarios[i].limited) {
      CHECK(*took[i] >= 9.0);
      CHECK(*took[i] <= 11.0);
    } else {
      CHECK(*took[i] < 2.0);
    }
  }
}

TEST_CASE("a change of the limit reaches live connections within a second - the rate before and after",
          "[tcp][.bandwidth]") {
  // 256 KiB/s, then 1 MiB/s, then 256 KiB/s again, 4 s each, on one live connection per datapath and
  // direction; the rate over the last 3 s of each phase is within 10 percent of the limit.
  constexpr std::uint64_t slow = 256 * kib;
  constexpr std::uint64_t fast = 1 * mib;
  const std::vector<std::uint64_t> phases{slow, fast, slow};
  std::vector<scenario> scenarios;
  for (const auto path : {relay::datapath::splice, relay::datapath::copy}) {
    for (const bool up : {true, false}) scenarios.push_back({path, up, 1});
  }
  auto limit = [](const scenario& s, std::uint64_t rate) {
    return s.up ? relay::bandwidth_limit_spec{rate, std::nullopt, std::nullopt}
                : relay::bandwidth_limit_spec{std::nullopt, rate, std::nullopt};
  };
  std::map<relay::datapath, std::unique_ptr<relay::engine>> engines;
  std::vector<std::unique_ptr<bulk_transfer>> transfers;
  std::vector<relay::forward_spec> specs;
  for (const auto& s : scenarios) {
    auto& e = engines[s.path];
    if (!e) e = std::make_unique<relay::engine>(fast_options(30s, s.path));
    transfers.push_back(std::make_unique<bulk_transfer>(s.up, 1, 32 * mib));  // more than the phases move
    auto spec = limited(static_cast<std::int64_t>(specs.size() + 1), transfers.back()->target_port(),
                        std::nullopt, std::nullopt);
    spec.bandwidth_limit = limit(s, phases[0]);
    specs.push_back(start(*e, spec));
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    threads.emplace_back([&, i] { transfers[i]->run(specs[i].listen_port); });
  }
  // From here on nothing may throw before the threads are joined: a failed change is only noted.
  bool changed = true;
  // rates[i][phase]: bytes/s over seconds 1 to 4 of the phase.
  std::vector<std::vector<double>> rates(scenarios.size());
  const auto t0 = steady::now();
  for (std::size_t phase = 0; phase < phases.size(); ++phase) {
    const auto begin = t0 + std::chrono::seconds(4 * phase);
    if (phase > 0) {
      for (std::size_t i = 0; i < scenarios.size(); ++i) {
        auto& e = *engines[scenarios[i].path];
        specs[i].bandwidth_limit = limit(scenarios[i], phases[phase]);
        auto p = e.prepare(specs[i]);
        changed = changed && p;
        if (p) e.apply(specs[i], std::move(p.value()));
      }
    }
    std::this_thread::sleep_until(begin + 1s);  // a measuring window, not a wait for an event
    std::vector<std::uint64_t> before;
    for (const auto& t : transfers) before.push_back(t->received());
    const auto from = steady::now();
    std::this_thread::sleep_until(begin + 4s);
    const auto seconds = seconds_between(from, steady::now());
    for (std::size_t i = 0; i < scenarios.size(); ++i) {
      rates[i].push_back(static_cast<double>(transfers[i]->received() - before[i]) / seconds);
    }
  }
  engines.clear();  // ends the transfers
  for (auto& t : threads) t.join();
  REQUIRE(changed);
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    for (std::size_t phase = 0; phase < phases.size(); ++phase) {
      INFO(scenarios[i].name() << ", phase " << phase << ": " << rates[i][phase] << " bytes/s, limit "
                               << phases[phase]);
      CHECK(rates[i][phase] >= 0.9 * static_cast<double>(phases[phase]));
      CHECK(rates[i][phase] <= 1.1 * static_cast<double>(phases[phase]));
    }
  }
}
