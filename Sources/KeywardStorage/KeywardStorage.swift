/// Encrypted record storage (`RecordStore`, SQLite and PostgreSQL), arriving with the gateway issue.
public enum KeywardStorage {}
