/// A record store over an SQL engine. The repositories (tenants, tokens, policies and settings,
/// records, jobs, the audit chain's reads) are written once, in the extensions of this protocol,
/// with the row codecs beside them; an engine supplies how statements run and what only it can do:
/// migrating, the group commit of inserts and audit events, holding a job, the chain's head.
public protocol SQLStore: RecordStore, SQLDatabase {}
