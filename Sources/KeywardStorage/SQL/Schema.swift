/// The one schema of every engine: an ordered list of migrations, each written once in neutral
/// SQL (see ``SQLDialect/schema(_:)``) and applied in order by each engine's `migrate()`.
///
/// A test migrates both engines and compares what they hold (tables, columns, indexes and
/// constraints). The only differences are each engine's own machinery, which the test names:
/// where the version is kept (SQLite's `user_version`, PostgreSQL's `keyward_schema` table) and
/// PostgreSQL's `audit_head`, the row every replica locks to append to one chain (SQLite has one
/// writer and reads the head from the last event).
public enum Schema {
    /// One step of the schema. Statements are applied in order, in one transaction.
    public struct Migration: Sendable {
        public let version: Int
        let statements: [Statement]
        /// PostgreSQL statements run before the migration's transaction on a database that has
        /// tables already (index builds that must not hold every replica's writes while they run:
        /// `CREATE INDEX CONCURRENTLY` cannot run in a transaction). Each must be safe to repeat.
        public let beforeTransaction: [String]

        init(version: Int, statements: [Statement], beforeTransaction: [String] = []) {
            self.version = version
            self.statements = statements
            self.beforeTransaction = beforeTransaction
        }

        /// The statements in `dialect`.
        public func statements(for dialect: SQLDialect) -> [String] {
            statements.compactMap { $0.only == nil || $0.only == dialect ? dialect.schema($0.sql) : nil }
        }
    }

    struct Statement: Sendable {
        let sql: String
        /// An engine's own machinery, or a storage hint only one engine has.
        let only: SQLDialect?
    }

    /// The current version: the last migration's.
    public static var version: Int { migrations.last!.version }

    /// The migrations after `version`, in order.
    public static func pending(after version: Int) -> [Migration] {
        migrations.filter { $0.version > version }
    }

    /// PostgreSQL databases written before this list existed recorded version 1 for what is here
    /// migrations 1 to 3, with the tables of 5 and the listing index that 4 replaces; 4 and 5 are
    /// written to apply to such a database too. This list commits all its steps in one
    /// transaction on PostgreSQL, so a 1 there was written by those releases only.
    public static func postgresVersion(recorded: Int) -> Int { recorded == 1 ? 3 : recorded }

    static let migrations: [Migration] = [
        Migration(version: 1, statements: [
            all("""
                CREATE TABLE tenants(
                    name TEXT PRIMARY KEY, key TEXT NOT NULL, store TEXT NOT NULL,
                    retention_days BIGINT NOT NULL, created_at BIGINT NOT NULL)
                """),
            all("CREATE INDEX tenants_key ON tenants(key)"),
            all("""
                CREATE TABLE tokens(
                    id TEXT PRIMARY KEY, hash BYTES NOT NULL UNIQUE,
                    tenant TEXT REFERENCES tenants(name), role TEXT NOT NULL, created_at BIGINT NOT NULL)
                """),
            all("""
                CREATE TABLE records(
                    tenant TEXT NOT NULL REFERENCES tenants(name), id TEXT NOT NULL, kind TEXT NOT NULL,
                    created_at BIGINT NOT NULL, expires_at BIGINT, model TEXT, metadata TEXT NOT NULL,
                    header BYTES NOT NULL, body BYTES NOT NULL,
                    PRIMARY KEY (tenant, id, kind))
                """),
            // Ciphertext does not compress: do not try.
            .init(sql: "ALTER TABLE records ALTER COLUMN body SET STORAGE EXTERNAL", only: .postgres),
            all("CREATE INDEX records_list ON records(tenant, kind, created_at, id)"),
            all("CREATE INDEX records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL"),
        ]),
        // Key life cycle, policies, the audit chain, jobs.
        Migration(version: 2, statements: [
            all("ALTER TABLE tenants ADD COLUMN previous_key TEXT"),
            all("ALTER TABLE tokens ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE"),
            all("CREATE TABLE policies(key TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL)"),
            all("""
                CREATE TABLE audit_events(
                    seq BIGINT PRIMARY KEY, time BIGINT NOT NULL, actor TEXT NOT NULL, tenant TEXT, key TEXT,
                    operation TEXT NOT NULL, purpose TEXT, request_id TEXT, record TEXT, result TEXT NOT NULL,
                    detail TEXT, prev_hash BYTES NOT NULL, hash BYTES NOT NULL)
                """),
            // The chain head: one row, locked by every replica's append.
            .init(sql: "CREATE TABLE audit_head(id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTES NOT NULL)",
                  only: .postgres),
            .init(sql: "INSERT INTO audit_head(id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))", only: .postgres),
            all("""
                CREATE TABLE audit_checkpoints(
                    seq BIGINT PRIMARY KEY, hash BYTES NOT NULL, time BIGINT NOT NULL,
                    public_key BYTES NOT NULL, signature BYTES NOT NULL)
                """),
            all("""
                CREATE TABLE jobs(
                    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, from_key TEXT NOT NULL, to_key TEXT NOT NULL,
                    status TEXT NOT NULL, cursor_id TEXT, cursor_kind TEXT, processed BIGINT NOT NULL,
                    rewrapped BIGINT NOT NULL, data_keys BIGINT NOT NULL, total BIGINT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, active_ms BIGINT NOT NULL, error TEXT)
                """),
        ]),
        Migration(version: 3, statements: [
            all("ALTER TABLE jobs ADD COLUMN unmatched BIGINT NOT NULL DEFAULT 0"),
        ]),
        // The listing index without the kind, so that the two records of an exchange (same tenant
        // and time, two kinds) share its leaf page: one page fewer rewritten per commit (listing
        // filters the kind while it walks the index).
        Migration(version: 4, statements: [
            all("DROP INDEX IF EXISTS records_list"),
            all("CREATE INDEX IF NOT EXISTS records_by_time ON records(tenant, created_at, id)"),
        ], beforeTransaction: [
            // An interrupted concurrent build leaves an invalid index of the same name: rebuild it.
            """
            DO $$ BEGIN
              IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                         WHERE c.relname = 'records_by_time' AND NOT i.indisvalid) THEN
                DROP INDEX records_by_time;
              END IF;
            END $$
            """,
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS records_by_time ON records(tenant, created_at, id)",
        ]),
        // Values every process of a deployment shares (the sealed audit signing key, the local
        // key store's header) and the local key store's keys, for engines that hold them.
        Migration(version: 5, statements: [
            all("CREATE TABLE IF NOT EXISTS local_keys(name TEXT PRIMARY KEY, document BYTES NOT NULL, revision BIGINT NOT NULL)"),
            all("CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value BYTES NOT NULL)"),
        ]),
        // Keyward's own key states: revocations that hold whatever the store says, and the
        // deletion schedules of stores that keep none.
        Migration(version: 6, statements: [
            all("""
                CREATE TABLE key_states(
                    key TEXT PRIMARY KEY, state TEXT NOT NULL, delete_at BIGINT, updated_at BIGINT NOT NULL)
                """),
        ]),
        // Whether a tenant's apps must encrypt their requests themselves (issue 21).
        Migration(version: 7, statements: [
            all("ALTER TABLE tenants ADD COLUMN encrypted_requests TEXT NOT NULL DEFAULT 'allowed'"),
        ]),
        // Batches (issue 20): progress and lease in the clear; metadata and results are records.
        Migration(version: 8, statements: [
            all("""
                CREATE TABLE batches(
                    id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name), token TEXT NOT NULL,
                    endpoint TEXT NOT NULL, input_file TEXT NOT NULL, status TEXT NOT NULL,
                    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, in_progress_at BIGINT, finalizing_at BIGINT,
                    completed_at BIGINT, failed_at BIGINT, expired_at BIGINT, cancelling_at BIGINT, cancelled_at BIGINT,
                    total BIGINT NOT NULL, completed BIGINT NOT NULL, failed BIGINT NOT NULL, dispatched BIGINT NOT NULL,
                    output_file TEXT, error_file TEXT, errors TEXT, owner TEXT, lease_until BIGINT)
                """),
            all("CREATE INDEX batches_by_tenant ON batches(tenant, created_at, id)"),
            all("CREATE INDEX batches_by_status ON batches(status)"),
        ]),
        // Rate limits (issue 24): tenants' and tokens' own, and each replica's counts per minute,
        // which the others add to theirs.
        Migration(version: 9, statements: [
            all("ALTER TABLE tenants ADD COLUMN requests_per_minute BIGINT"),
            all("ALTER TABLE tenants ADD COLUMN tokens_per_minute BIGINT"),
            all("ALTER TABLE tokens ADD COLUMN requests_per_minute BIGINT"),
            all("ALTER TABLE tokens ADD COLUMN tokens_per_minute BIGINT"),
            all("""
                CREATE TABLE rate_counts(
                    scope TEXT NOT NULL, minute BIGINT NOT NULL, replica TEXT NOT NULL,
                    requests BIGINT NOT NULL, tokens BIGINT NOT NULL, PRIMARY KEY (scope, minute, replica))
                """),
        ]),
        // A batch's `output_expires_after` (seconds): how long its output and error files live.
        Migration(version: 10, statements: [
            all("ALTER TABLE batches ADD COLUMN output_expires_after BIGINT"),
        ]),
    ]

    private static func all(_ sql: String) -> Statement { Statement(sql: sql, only: nil) }
}
