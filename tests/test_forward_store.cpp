// forward_store: CRUD, id assignment, migrations and reopening.
#include "store/forward_store.hpp"
#include "spec_helpers.hpp"
#include "relay/forward_fields.hpp"
#include "read_only_file.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sqlite3.h>

namespace {
struct temp_db {
  test::temp_dir dir;
  std::string path() const { return (dir.path / "test.db").string(); }
};

relay::forward_spec sample(std::uint16_t port) {
  relay::forward_spec s;
  s.name = "sample";
  s.listen_host = "127.0.0.1";
  s.listen_port = port;
  test::only_target(s).host = "example.com";
  test::only_target(s).port = 443;
  return s;
}
}  // namespace

TEST_CASE("insert, get, list, update and remove", "[store]") {
  temp_db tmp;
  store::forward_store db(tmp.path());
  auto a = db.insert(sample(1001));
  auto b = db.insert(sample(1002));
  CHECK(a.spec.id == 1);
  CHECK(b.spec.id == 2);
  CHECK(a.created_at.size() == 20);
  CHECK(a.created_at.back() == 'Z');

  auto got = db.get(1);
  REQUIRE(got);
  CHECK(got->spec == a.spec);
  CHECK_FALSE(db.get(99));

  auto list = db.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0].spec.id == 1);
  CHECK(list[1].spec.id == 2);

  auto changed = a.spec;
  test::only_target(changed).port = 8443;
  changed.enabled = false;
  auto updated = db.update(changed);
  REQUIRE(updated);
  CHECK(updated->spec == changed);
  CHECK(updated->created_at == a.created_at);
  auto missing = changed;
  missing.id = 42;
  CHECK_FALSE(db.update(missing));

  CHECK(db.remove(1));
  CHECK_FALSE(db.remove(1));
  CHECK(db.list().size() == 1);
}

TEST_CASE("ids are never reused, even after deleting the newest", "[store]") {
  temp_db tmp;
  store::forward_store db(tmp.path());
  db.insert(sample(1));
  auto second = db.insert(sample(2));
  db.remove(second.spec.id);
  CHECK(db.insert(sample(3)).spec.id == 3);
}

TEST_CASE("a reopened database has everything, in WAL mode, at the latest schema", "[store]") {
  temp_db tmp;
  {
    store::forward_store db(tmp.path());
    db.insert(sample(1));
    auto s = sample(2);
    s.enabled = false;
    db.insert(s);
  }
  store::forward_store db(tmp.path());
  auto list = db.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0].spec.enabled);
  CHECK_FALSE(list[1].spec.enabled);
  CHECK(db.schema_version() == store::forward_store::latest_schema_version());

  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(tmp.path().c_str(), &raw) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, nullptr);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(raw);
}

TEST_CASE("migrations: a new file is created at the latest version - a newer one is refused", "[store]") {
  temp_db tmp;
  { store::forward_store db(tmp.path()); }
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(tmp.path().c_str(), &raw) == SQLITE_OK);
  const auto newer = "PRAGMA user_version = " + std::to_string(store::forward_store::latest_schema_version() + 1);
  REQUIRE(sqlite3_exec(raw, newer.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  CHECK_THROWS_WITH(store::forward_store(tmp.path()), Catch::StartsWith("database " + tmp.path() + ": ") &&
                                                        Catch::Contains("newer than this portrelay"));
}

TEST_CASE("the schema refuses out-of-range values even if a caller slips", "[store]") {
  temp_db tmp;
  store::forward_store db(tmp.path());
  auto s = sample(1);
  test::only_target(s).port = 0;
  CHECK_THROWS_AS(db.insert(s), store::store_error);
  CHECK(db.list().empty());
}

TEST_CASE("an unopenable path is a clear error", "[store]") {
  CHECK_THROWS_WITH(store::forward_store("/nonexistent-dir/x/portrelay.db"), Catch::Contains("cannot open database"));
}

TEST_CASE("UDP settings round-trip", "[store]") {
  temp_db tmp;
  store::forward_store db(tmp.path());
  auto s = sample(53);
  s.protocol = relay::protocol::udp;
  s.udp_idle_timeout_s = 5;
  s.udp_max_sessions = 10;
  auto f = db.insert(s);
  auto got = db.get(f.spec.id);
  REQUIRE(got);
  CHECK(got->spec == f.spec);
  CHECK(got->spec.udp_max_sessions == 10);
}

TEST_CASE("migrations 2 and 3 bring a version 1 database up to date, keeping its rows", "[store]") {
  temp_db tmp;
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(tmp.path().c_str(), &raw) == SQLITE_OK);
  // The schema exactly as migration 1 left it.
  const char* v1 = R"sql(
    CREATE TABLE forwards (
      id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL DEFAULT '',
      protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')), listen_host TEXT NOT NULL,
      listen_port INTEGER NOT NULL CHECK (listen_port BETWEEN 0 AND 65535), target_host TEXT NOT NULL,
      target_port INTEGER NOT NULL CHECK (target_port BETWEEN 1 AND 65535),
      enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)), created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    INSERT INTO forwards (name, protocol, listen_host, listen_port, target_host, target_port, enabled, created_at,
      updated_at) VALUES ('old', 'tcp', '127.0.0.1', 1234, 'example.com', 80, 1, '2026-01-01T00:00:00Z',
      '2026-01-01T00:00:00Z');
    PRAGMA user_version = 1;
  )sql";
  REQUIRE(sqlite3_exec(raw, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);

  store::forward_store db(tmp.path());
  CHECK(db.schema_version() == store::forward_store::latest_schema_version());
  auto list = db.list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].spec.name == "old");
  CHECK(list[0].spec.listen_port == 1234);
  CHECK(list[0].spec.udp_idle_timeout_s == 60);
  CHECK(list[0].spec.udp_max_sessions == 4096);
}

// ---- a file that cannot be trusted or written (issue 12, part 6) ----

TEST_CASE("a read-only database file is refused when opened, naming the file", "[store]") {
  temp_db tmp;
  { store::forward_store db(tmp.path()); }
  test::read_only_file ro(tmp.path());
  if (!ro.ok()) {
    WARN("this file system has no immutable attribute; a read-only file cannot be made for root");
    return;
  }
  CHECK_THROWS_WITH(store::forward_store(tmp.path()), "database " + tmp.path() + ": the file is read-only");
}

TEST_CASE("a database whose journal cannot be written is refused when opened, not at the first change", "[store]") {
  temp_db tmp;
  { store::forward_store db(tmp.path()); }
  // Another connection keeps the -wal file in place; that file is made read-only. The database
  // file itself stays writable, so only a real write finds out.
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(tmp.path().c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "SELECT count(*) FROM forwards", nullptr, nullptr, nullptr) == SQLITE_OK);
  REQUIRE(std::filesystem::exists(tmp.path() + "-wal"));
  {
    test::read_only_file ro(tmp.path() + "-wal");
    if (!ro.ok()) {
      sqlite3_close(other);
      WARN("this file system has no immutable attribute; a read-only file cannot be made for root");
      return;
    }
    CHECK_THROWS_WITH(store::forward_store(tmp.path()),
                      Catch::StartsWith("database " + tmp.path() + ": cannot write: ") &&
                          Catch::Contains("readonly"));
  }
  sqlite3_close(other);
}

TEST_CASE("a file that is not a database is refused naming the file", "[store]") {
  temp_db tmp;
  { std::ofstream(tmp.path()) << "this is not a database, only text long enough to look like a header\n"; }
  CHECK_THROWS_WITH(store::forward_store(tmp.path()),
                    "database " + tmp.path() + ": sqlite: file is not a database");
}

TEST_CASE("a row a hand edit made unrepresentable is read with the reason, never as a default", "[store]") {
  temp_db tmp;
  {
    store::forward_store db(tmp.path());
    for (int i = 0; i < 7; ++i) db.insert(sample(static_cast<std::uint16_t>(2000 + i)));
  }
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(tmp.path().c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw,
                       "PRAGMA ignore_check_constraints = ON;"
                       "UPDATE forwards SET spec = json_set(spec, '$.protocol', 'sctp') WHERE id = 2;"
                       "UPDATE forwards SET spec = json_set(spec, '$.listen_port', 70000) WHERE id = 3;"
                       "UPDATE forwards SET spec = json_set(spec, '$.enabled', 2) WHERE id = 4;"
                       "UPDATE forwards SET spec = json_set(spec, '$.name', 5) WHERE id = 5;"
                       "UPDATE forwards SET spec = json_set(spec, '$.target_port', '443x') WHERE id = 6;"
                       "UPDATE forwards SET spec = '{\"name\": ' WHERE id = 7;",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  store::forward_store db(tmp.path());
  const auto rows = db.list();
  REQUIRE(rows.size() == 7);
  CHECK(rows[0].invalid.empty());
  CHECK(rows[1].invalid == "protocol must be \"tcp\" or \"udp\"");
  CHECK(rows[1].invalid_field == "protocol");
  CHECK(rows[2].invalid == "listen_port must be from 0 to 65535");
  CHECK(rows[3].invalid == "enabled must be true or false");
  CHECK(rows[4].invalid == "name must be a string");
  CHECK(rows[5].invalid == "target_port must be an integer from 1 to 65535");
  CHECK(rows[5].invalid_field == "target_port");
  CHECK(rows[6].invalid == "spec is not valid JSON");
  // The fields after a bad one are still read: the row shows what it holds.
  CHECK(rows[1].spec.listen_port == 2001);
  CHECK(test::only_target(rows[1].spec).host == "example.com");
}

TEST_CASE("migration 3: a version-2 file made by portrelay 0.1.0 keeps every row, id and value", "[store]") {
  temp_db tmp;
  std::filesystem::copy_file(std::string(PORTRELAY_SOURCE_DIR) + "/tests/data/schema-v2.db", tmp.path(),
                             std::filesystem::copy_options::overwrite_existing);
  {
    store::forward_store db(tmp.path());
    CHECK(db.schema_version() == store::forward_store::latest_schema_version());
    const auto rows = db.list();
    // Made through the API: 1 web (tcp), 2 deleted, 3 dns (udp, its own settings), 4 off (disabled), 5 deleted.
    REQUIRE(rows.size() == 3);
    for (const auto& r : rows) CHECK(r.invalid.empty());
    // Whole specs, every field (as the document of each: a mismatch prints as JSON).
    const auto expect = [](const relay::forward_spec& got, const relay::forward_spec& want) {
      CHECK(got.id == want.id);
      CHECK(relay::to_document(got) == relay::to_document(want));
    };
    expect(rows[0].spec, {.id = 1, .name = "web", .protocol = relay::protocol::tcp, .listen_host = "127.0.0.1",
                          .listen_port = 40609, .targets = {{"localhost", 8080}}});
    expect(rows[1].spec, {.id = 3, .name = "dns \xE2\x98\x83", .protocol = relay::protocol::udp, .listen_host = "::1",
                          .listen_port = 37377, .targets = {{"127.0.0.53", 53}},
                          .udp_idle_timeout_s = 30, .udp_max_sessions = 100});
    expect(rows[2].spec, {.id = 4, .name = "off", .listen_host = "127.0.0.1", .listen_port = 0,
                          .targets = {{"db.internal", 5432}}, .enabled = false});
    CHECK(rows[0].created_at == "2026-11-30T09:49:25Z");
    CHECK(rows[2].updated_at == "2026-11-30T09:49:25Z");
    // Ids are never reused: the next one follows the deleted 5.
    CHECK(db.insert(sample(2222)).spec.id == 6);
  }
  // Opened again, nothing more migrates and everything reads the same.
  store::forward_store again(tmp.path());
  CHECK(again.list().size() == 4);
  CHECK(again.get(3)->spec.udp_max_sessions == 100);
}
