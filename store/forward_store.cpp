// forward_store: SQL for the forwards table and the numbered schema migrations.
#include "store/forward_store.hpp"

#include "relay/forward_fields.hpp"

#include <chrono>
#include <ctime>

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
    // 3: the writable fields as one JSON document (relay/forward_fields' own form), so that a new
    // field needs no SQL; protocol and the listen address stay columns beside it, for queries. A
    // value of the wrong type (a hand edit) is carried over as it is and reported when read.
    R"sql(
    ALTER TABLE forwards ADD COLUMN spec TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(spec));
    UPDATE forwards SET spec = json_object(
      'name',               CASE typeof(name) WHEN 'blob' THEN CAST(name AS TEXT) ELSE name END,
      'protocol',           CASE typeof(protocol) WHEN 'blob' THEN CAST(protocol AS TEXT) ELSE protocol END,
      'listen_host',        CASE typeof(listen_host) WHEN 'blob' THEN CAST(listen_host AS TEXT) ELSE listen_host END,
      'listen_port',        CASE typeof(listen_port) WHEN 'blob' THEN CAST(listen_port AS TEXT) ELSE listen_port END,
      'target_host',        CASE typeof(target_host) WHEN 'blob' THEN CAST(target_host AS TEXT) ELSE target_host END,
      'target_port',        CASE typeof(target_port) WHEN 'blob' THEN CAST(target_port AS TEXT) ELSE target_port END,
      'enabled',            CASE WHEN enabled IS 1 THEN json('true') WHEN enabled IS 0 THEN json('false')
                                 WHEN typeof(enabled) = 'blob' THEN CAST(enabled AS TEXT) ELSE enabled END,
      'udp_idle_timeout_s', CASE typeof(udp_idle_timeout_s) WHEN 'blob' THEN CAST(udp_idle_timeout_s AS TEXT)
                                 ELSE udp_idle_timeout_s END,
      'udp_max_sessions',   CASE typeof(udp_max_sessions) WHEN 'blob' THEN CAST(udp_max_sessions AS TEXT)
                                 ELSE udp_max_sessions END);
    ALTER TABLE forwards DROP COLUMN name;
    ALTER TABLE forwards DROP COLUMN target_host;
    ALTER TABLE forwards DROP COLUMN target_port;
    ALTER TABLE forwards DROP COLUMN enabled;
    ALTER TABLE forwards DROP COLUMN udp_idle_timeout_s;
    ALTER TABLE forwards DROP COLUMN udp_max_sessions;
    )sql",
    // 4: fleet mode's local copy (--store etcd): each forward's etcd mod_revision, and the revision
    // the whole set was read at. Both stay 0 on a single host.
    R"sql(
    ALTER TABLE forwards ADD COLUMN mod_revision INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE fleet (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    )sql",
};

constexpr const char* select_rows = "SELECT id, created_at, updated_at, spec, mod_revision FROM forwards ";

// A document's text with each byte that is not UTF-8 (a hand edit: SQLite does not check) written as
// the escape of U+0000, so that it parses and the field that holds it is refused by its own check
// (every text field refuses control characters) rather than the whole row being unreadable. Such
// bytes can only be inside strings: anywhere else the document is not JSON at all.
std::string escape_bad_bytes(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t start = i;
    if (relay::next_code_point(text, i)) {
      out.append(text, start, i - start);
    } else {
      out += "\\u0000";
      ++i;
    }
  }
  return out;
}

stored_forward read_row(const statement& s) {
  stored_forward f;
  f.spec.id = s.column_int(0);
  f.created_at = s.column_text(1);
  f.updated_at = s.column_text(2);
  f.mod_revision = s.column_int(4);
  const auto doc = relay::json::parse(escape_bad_bytes(s.column_text(3)), nullptr, false);
  if (doc.is_discarded()) {
    f.invalid = "spec is not valid JSON";
    f.invalid_field = "spec";
  } else if (auto bad = relay::from_document(doc, f.spec)) {
    f.invalid = std::move(bad->message);
    f.invalid_field = std::move(bad->field);
  }
  return f;
}

// The columns beside the document, and the document: parameters 1 to 4. A spec its own fields'
// checks refuse is not written (the API checks first; this is the store's own guard).
void bind_spec(statement& s, const relay::forward_spec& spec) {
  relay::forward_spec checked;
  if (auto bad = relay::from_document(relay::to_document(spec), checked)) {
    throw store_error("refused to store forward " + std::to_string(spec.id) + ": " + bad->message);
  }
  s.bind(1, relay::to_string(spec.protocol))
      .bind(2, spec.listen_host)
      .bind(3, std::int64_t{spec.listen_port})
      .bind(4, relay::document_text(spec));
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
  statement s(db_.handle(), std::string(select_rows) + "ORDER BY id");
  std::vector<stored_forward> out;
  while (s.step()) out.push_back(read_row(s));
  return out;
}

std::optional<stored_forward> forward_store::select_one(std::int64_t id) {
  statement s(db_.handle(), std::string(select_rows) + "WHERE id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_row(s);
}

std::optional<stored_forward> forward_store::get(std::int64_t id) {
  std::lock_guard lock(mutex_);
  return select_one(id);
}

stored_forward forward_store::insert_row(const relay::forward_spec& spec) {
  const auto now = rfc3339_now();
  statement s(db_.handle(),
              "INSERT INTO forwards (protocol, listen_host, listen_port, spec, created_at, updated_at) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?5)");
  bind_spec(s, spec);
  s.bind(5, now);
  s.step();
  stored_forward f{spec, now, now};
  f.spec.id = db_.last_insert_id();
  return f;
}

bool forward_store::update_row(const relay::forward_spec& spec) {
  statement s(db_.handle(),
              "UPDATE forwards SET protocol = ?1, listen_host = ?2, listen_port = ?3, spec = ?4, updated_at = ?5 "
              "WHERE id = ?6");
  bind_spec(s, spec);
  s.bind(5, rfc3339_now()).bind(6, spec.id);
  s.step();
  return db_.changes() > 0;
}

bool forward_store::delete_row(std::int64_t id) {
  statement s(db_.handle(), "DELETE FROM forwards WHERE id = ?1");
  s.bind(1, id);
  s.step();
  return db_.changes() > 0;
}

stored_forward forward_store::insert(const relay::forward_spec& spec) {
  std::lock_guard lock(mutex_);
  return insert_row(spec);
}

std::optional<stored_forward> forward_store::update(const relay::forward_spec& spec) {
  std::lock_guard lock(mutex_);
  if (!update_row(spec)) return std::nullopt;
  return select_one(spec.id);
}

bool forward_store::remove(std::int64_t id) {
  std::lock_guard lock(mutex_);
  return delete_row(id);
}

std::vector<stored_forward> forward_store::replace_set(const std::vector<relay::forward_spec>& added,
                                                       const std::vector<relay::forward_spec>& changed,
                                                       const std::vector<std::int64_t>& removed) {
  std::lock_guard lock(mutex_);
  transaction tx(db_);
  for (const auto id : removed) {
    if (!delete_row(id)) throw store_error("forward " + std::to_string(id) + " is not stored");
  }
  for (const auto& spec : changed) {
    if (!update_row(spec)) throw store_error("forward " + std::to_string(spec.id) + " is not stored");
  }
  std::vector<stored_forward> out;
  out.reserve(added.size());
  for (const auto& spec : added) out.push_back(insert_row(spec));
  tx.commit();
  return out;
}

void forward_store::mirror(const std::vector<mirrored>& put, const std::vector<std::int64_t>& removed,
                           std::int64_t revision) {
  std::lock_guard lock(mutex_);
  transaction tx(db_);
  for (const auto id : removed) delete_row(id);
  const auto now = rfc3339_now();
  for (const auto& m : put) {
    statement s(db_.handle(),
                "INSERT INTO forwards (protocol, listen_host, listen_port, spec, created_at, updated_at, id, mod_revision) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) ON CONFLICT (id) DO UPDATE SET protocol = excluded.protocol, "
                "listen_host = excluded.listen_host, listen_port = excluded.listen_port, spec = excluded.spec, "
                "updated_at = excluded.updated_at, mod_revision = excluded.mod_revision");
    bind_spec(s, m.spec);
    s.bind(5, now).bind(6, m.spec.id).bind(7, m.mod_revision);
    s.step();
  }
  statement s(db_.handle(), "INSERT INTO fleet (key, value) VALUES ('revision', ?1) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  s.bind(1, revision);
  s.step();
  tx.commit();
}

std::int64_t forward_store::mirrored_revision() {
  std::lock_guard lock(mutex_);
  statement s(db_.handle(), "SELECT value FROM fleet WHERE key = 'revision'");
  return s.step() ? s.column_int(0) : 0;
}

}  // namespace store
