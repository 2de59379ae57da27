// forward_store: SQL for the forwards table and the numbered schema migrations.
#include "store/forward_store.hpp"

#include <chrono>
#include <ctime>
#include <limits>

namespace store {

namespace {

// Migration N brings the schema from user_version N-1 to N. Append only; never edit a shipped one.
const char* const migrations[] = {
    R"sql(
    CREATE TABLE forwards (
      id          INTEGER PRIMARY KEY AUTOINCREMENT,
      name        TEXT    NOT NULL DEFAULT '',
      protocol    TEXT    NOT NULL CHECK (protocol IN ('tcp', 'udp')),
      listen_host TEXT    NOT NULL,
      listen_port INTEGER NOT NULL CHECK (listen_port BETWEEN 0 AND 65535),
      target_host TEXT    NOT NULL,
      target_port INTEGER NOT NULL CHECK (target_port BETWEEN 1 AND 65535),
      enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
      created_at  TEXT    NOT NULL,
      updated_at  TEXT    NOT NULL
    );
    )sql",
    R"sql(
    ALTER TABLE forwards ADD COLUMN udp_idle_timeout_s INTEGER NOT NULL DEFAULT 60
      CHECK (udp_idle_timeout_s BETWEEN 1 AND 86400);
    ALTER TABLE forwards ADD COLUMN udp_max_sessions INTEGER NOT NULL DEFAULT 4096
      CHECK (udp_max_sessions BETWEEN 1 AND 1000000);
    )sql",
};

constexpr const char* columns =
    "id, name, protocol, listen_host, listen_port, target_host, target_port, enabled, udp_idle_timeout_s, "
    "udp_max_sessions, created_at, updated_at";

// Notes the first column of a row that the spec cannot hold.
void mark_invalid(stored_forward& f, const char* field, const char* why) {
  if (!f.invalid.empty()) return;
  f.invalid = std::string(field) + " " + why;
  f.invalid_field = field;
}

// Reads column `index` as an integer of type T, or marks the row invalid.
template <class T>
T read_integer(const statement& s, int index, const char* field, stored_forward& f) {
  const auto v = s.column_int(index);
  const bool fits = v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max();
  if (s.column_type(index) != SQLITE_INTEGER || !fits) {
    mark_invalid(f, field, "is not an integer of its range");
    return T{};
  }
  return static_cast<T>(v);
}

std::string read_text(const statement& s, int index, const char* field, stored_forward& f) {
  if (s.column_type(index) != SQLITE_TEXT) mark_invalid(f, field, "is not text");
  return s.column_text(index);
}

stored_forward read_row(const statement& s) {
  stored_forward f;
  f.spec.id = s.column_int(0);
  f.spec.name = read_text(s, 1, "name", f);
  const auto protocol = relay::parse_protocol(read_text(s, 2, "protocol", f));
  if (!protocol) mark_invalid(f, "protocol", "is not \"tcp\" or \"udp\"");
  f.spec.protocol = protocol.value_or(relay::protocol::tcp);
  f.spec.listen_host = read_text(s, 3, "listen_host", f);
  f.spec.listen_port = read_integer<std::uint16_t>(s, 4, "listen_port", f);
  f.spec.target_host = read_text(s, 5, "target_host", f);
  f.spec.target_port = read_integer<std::uint16_t>(s, 6, "target_port", f);
  const auto enabled = s.column_int(7);
  if (s.column_type(7) != SQLITE_INTEGER || (enabled != 0 && enabled != 1)) mark_invalid(f, "enabled", "is not 0 or 1");
  f.spec.enabled = enabled == 1;
  f.spec.udp_idle_timeout_s = read_integer<std::uint32_t>(s, 8, "udp_idle_timeout_s", f);
  f.spec.udp_max_sessions = read_integer<std::uint32_t>(s, 9, "udp_max_sessions", f);
  f.created_at = s.column_text(10);
  f.updated_at = s.column_text(11);
  return f;
}

// Binds the writable fields as parameters 1..9, in the order of the columns after id.
void bind_spec(statement& s, const relay::forward_spec& spec) {
  s.bind(1, spec.name)
      .bind(2, relay::to_string(spec.protocol))
      .bind(3, spec.listen_host)
      .bind(4, std::int64_t{spec.listen_port})
      .bind(5, spec.target_host)
      .bind(6, std::int64_t{spec.target_port})
      .bind(7, std::int64_t{spec.enabled ? 1 : 0})
      .bind(8, std::int64_t{spec.udp_idle_timeout_s})
      .bind(9, std::int64_t{spec.udp_max_sessions});
}

}  // namespace

std::string rfc3339_now() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

forward_store::forward_store(const std::string& path) : db_(path) {
  try {
    // SQLite opens a file it may not write read-only without a word; every change would then fail.
    if (sqlite3_db_readonly(db_.handle(), "main") == 1) throw store_error("the file is read-only");
    db_.exec("PRAGMA journal_mode=WAL");
    db_.exec("PRAGMA synchronous=FULL");  // an acknowledged change survives a crash of the host too
    migrate();
    prove_writable();
  } catch (const store_error& e) {
    throw store_error("database " + path + ": " + e.what());
  }
}

int forward_store::latest_schema_version() { return static_cast<int>(std::size(migrations)); }

int forward_store::schema_version() {
  std::lock_guard lock(mutex_);
  return static_cast<int>(read_version());
}

std::int64_t forward_store::read_version() {
  statement s(db_.handle(), "PRAGMA user_version");
  s.step();
  return s.column_int(0);
}

void forward_store::migrate() {
  const auto current = read_version();
  if (current > latest_schema_version()) {
    throw store_error("database schema version " + std::to_string(current) + " is newer than this portrelay (" +
                      std::to_string(latest_schema_version()) + "); upgrade portrelay");
  }
  for (auto v = current; v < latest_schema_version(); ++v) {
    transaction tx(db_);
    db_.exec(migrations[v]);
    db_.exec("PRAGMA user_version = " + std::to_string(v + 1));
    tx.commit();
  }
}

// A real write, committed: a directory where the -wal file cannot be made, or a journal that cannot
// be written, fails here rather than at the first change. Rewriting user_version with its own value
// changes nothing.
void forward_store::prove_writable() {
  const auto current = read_version();
  try {
    transaction tx(db_);
    db_.exec("PRAGMA user_version = " + std::to_string(current));
    tx.commit();
  } catch (const store_error& e) {
    throw store_error(std::string("cannot write: ") + e.what());
  }
}

std::vector<stored_forward> forward_store::list() {
  std::lock_guard lock(mutex_);
  statement s(db_.handle(), std::string("SELECT ") + columns + " FROM forwards ORDER BY id");
  std::vector<stored_forward> out;
  while (s.step()) out.push_back(read_row(s));
  return out;
}

std::optional<stored_forward> forward_store::select_one(std::int64_t id) {
  statement s(db_.handle(), std::string("SELECT ") + columns + " FROM forwards WHERE id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_row(s);
}

std::optional<stored_forward> forward_store::get(std::int64_t id) {
  std::lock_guard lock(mutex_);
  return select_one(id);
}

stored_forward forward_store::insert(const relay::forward_spec& spec) {
  std::lock_guard lock(mutex_);
  const auto now = rfc3339_now();
  statement s(db_.handle(),
              "INSERT INTO forwards (name, protocol, listen_host, listen_port, target_host, target_port, enabled, "
              "udp_idle_timeout_s, udp_max_sessions, created_at, updated_at) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)");
  bind_spec(s, spec);
  s.bind(10, now);
  s.step();
  stored_forward f{spec, now, now};
  f.spec.id = db_.last_insert_id();
  return f;
}

std::optional<stored_forward> forward_store::update(const relay::forward_spec& spec) {
  std::lock_guard lock(mutex_);
  statement s(db_.handle(),
              "UPDATE forwards SET name = ?1, protocol = ?2, listen_host = ?3, listen_port = ?4, target_host = ?5, "
              "target_port = ?6, enabled = ?7, udp_idle_timeout_s = ?8, udp_max_sessions = ?9, updated_at = ?10 "
              "WHERE id = ?11");
  bind_spec(s, spec);
  s.bind(10, rfc3339_now()).bind(11, spec.id);
  s.step();
  if (db_.changes() == 0) return std::nullopt;
  return select_one(spec.id);
}

bool forward_store::remove(std::int64_t id) {
  std::lock_guard lock(mutex_);
  statement s(db_.handle(), "DELETE FROM forwards WHERE id = ?1");
  s.bind(1, id);
  s.step();
  return db_.changes() > 0;
}

}  // namespace store
