import KeywardAudit
import KeywardCrypto
import Testing

@Suite("Audit chain links and checkpoints (no store)")
struct AuditChainLinkTests {
    static func event(_ i: Int, _ operation: AuditOperation = .decryptRecord) -> AuditEvent {
        AuditEvent(time: Int64(i), actor: "tok_\(i)", tenant: "acme", key: "local:acme", operation: operation, record: "r\(i)")
    }

    @Test func linkingInTwoCallsEqualsLinkingInOne() throws {
        let events = (1...5).map { Self.event($0) }
        var once = AuditHead.genesis
        let whole = once.link(events)
        var twice = AuditHead.genesis
        let parts = twice.link(Array(events[..<2])) + twice.link(Array(events[2...]))
        #expect(whole == parts)
        #expect(once == twice)
        #expect(whole.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(whole.first?.previousHash == AuditEvent.genesis)
        #expect(once == AuditHead(seq: 5, hash: whole[4].hash))
        var verifier = try AuditVerifier(trustedKeys: [], checkpoints: [])
        for e in whole { try verifier.next(e) }
        #expect(try verifier.finish() == 5)
    }

    @Test func operationsAndResultsAreHashedByTheirStoredNames() {
        // The names are the stored (and hashed) form: renaming one would break every existing chain.
        let names: [(AuditOperation, String)] = [
            (.generateDataKey, "generate_data_key"), (.unwrap, "unwrap"), (.rewrap, "rewrap"), (.encryptRecord, "encrypt_record"),
            (.decryptRecord, "decrypt_record"), (.scheduleDeletion, "schedule_deletion"), (.rekeyDone, "rekey_done"),
            (.tokenSuspend, "token_suspend"), (.policyChange, "policy_change"), (.auditKeyCreated, "audit_key_created"),
        ]
        for (operation, name) in names { #expect(operation.rawValue == name) }
        #expect(AuditResult.error("key_disabled").rawValue == "error:key_disabled")
        var a = Self.event(1, AuditOperation(rawValue: "unwrap"))
        var b = Self.event(1, .unwrap)
        #expect(a.canonicalBytes == b.canonicalBytes)
        a.result = .denied
        b.result = AuditResult(rawValue: "denied")
        #expect(a.chainHash(after: AuditEvent.genesis) == b.chainHash(after: AuditEvent.genesis))
    }

    @Test func aSignerRestoredFromItsSeedSignsCheckpointsTheVerifierTrusts() throws {
        let signer = AuditSigner()
        let restored = try AuditSigner(seed: signer.seed())
        #expect(restored.publicKey == signer.publicKey)
        #expect("\(signer)" == "AuditSigner(<redacted>)")
        var head = AuditHead.genesis
        let events = head.link((1...3).map { Self.event($0) })
        let checkpoint = try restored.checkpoint(seq: head.seq, hash: head.hash, time: 42)
        var verifier = try AuditVerifier(trustedKeys: [signer.publicKey], checkpoints: [checkpoint])
        for e in events { try verifier.next(e) }
        #expect(try verifier.finish() == 3)
        // Another key's checkpoint is refused.
        #expect(throws: AuditVerifier.Failure.self) {
            _ = try AuditVerifier(trustedKeys: [AuditSigner().publicKey], checkpoints: [checkpoint])
        }
    }
}
