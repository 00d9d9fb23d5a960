/// What an audit event records: a key-store call, a record read or written, a change to keys,
/// tokens, tenants or policies. Stored by its raw value; an unknown raw value read from an older
/// or newer log is kept as it is, so that its hash still verifies.
public struct AuditOperation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    // Key-store calls made for data keys.
    public static let generateDataKey = Self(rawValue: "generate_data_key")
    public static let unwrap = Self(rawValue: "unwrap")
    public static let rewrap = Self(rawValue: "rewrap")
    // Records.
    public static let encryptRecord = Self(rawValue: "encrypt_record")
    public static let decryptRecord = Self(rawValue: "decrypt_record")
    public static let deleteRecord = Self(rawValue: "delete_record")
    public static let purgeShredded = Self(rawValue: "purge_shredded")
    // The key life cycle.
    public static let rotate = Self(rawValue: "rotate")
    public static let disable = Self(rawValue: "disable")
    public static let enable = Self(rawValue: "enable")
    public static let scheduleDeletion = Self(rawValue: "schedule_deletion")
    public static let cancelDeletion = Self(rawValue: "cancel_deletion")
    /// A key whose waiting period ended, destroyed by Keyward's key deletion service.
    public static let destroyKey = Self(rawValue: "destroy_key")
    public static let rekeyStart = Self(rawValue: "rekey_start")
    public static let rekeyDone = Self(rawValue: "rekey_done")
    public static let rekeyFailed = Self(rawValue: "rekey_failed")
    // Batches: made, taken up by a replica (also after a restart), and ended (the detail names
    // the status and counts).
    public static let batchCreate = Self(rawValue: "batch_create")
    public static let batchRun = Self(rawValue: "batch_run")
    public static let batchCancel = Self(rawValue: "batch_cancel")
    public static let batchEnd = Self(rawValue: "batch_end")
    // Tenants, tokens, policies, access.
    public static let tenantCreate = Self(rawValue: "tenant_create")
    /// A change of a tenant's settings; the detail names the new values.
    public static let tenantUpdate = Self(rawValue: "tenant_update")
    public static let tokenCreate = Self(rawValue: "token_create")
    public static let tokenDelete = Self(rawValue: "token_delete")
    /// A change of an app token's rate limits; the detail names the new values.
    public static let tokenUpdate = Self(rawValue: "token_update")
    public static let tokenSuspend = Self(rawValue: "token_suspend")
    public static let tokenResume = Self(rawValue: "token_resume")
    public static let policyChange = Self(rawValue: "policy_change")
    public static let access = Self(rawValue: "access")
    public static let alert = Self(rawValue: "alert")
    // The audit log itself.
    public static let auditRead = Self(rawValue: "audit_read")
    public static let auditResumed = Self(rawValue: "audit_resumed")
    public static let auditKeyCreated = Self(rawValue: "audit_key_created")
}

/// How an audited operation ended: `ok`, `denied`, `error:<code>`, or an outcome of its own
/// (`token_suspended`). Stored by its raw value.
public struct AuditResult: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let ok = Self(rawValue: "ok")
    /// Refused by a role or a key policy.
    public static let denied = Self(rawValue: "denied")
    /// Over a tenant's or token's rate limit (the first refusal of a minute; the detail names the limit).
    public static let rateLimited = Self(rawValue: "rate_limited")
    /// An alert suspended the token that raised it.
    public static let tokenSuspended = Self(rawValue: "token_suspended")
    /// Failed with an error code (a `CodedError`'s code, never its reason).
    public static func error(_ code: some CustomStringConvertible) -> Self { Self(rawValue: "error:\(code)") }
}
