import Foundation
import KeywardAudit
import KeywardCrypto
@testable import KeywardGateway
import KeywardKeyStores
import KeywardStorage
import KeywardTesting
import Logging
import Testing

/// Requests sealed by an app under the tenant's key, opened by the vault; answers sealed for it.
/// Messages here are written by Keyward's own ESDK writer through the tenant's key store; the
/// Python SDK's are tested in tests/gateway/test_encrypted_requests.py.
@Suite("Encrypted requests and answers")
struct EncryptedExchangesTests {
    let dir: TemporaryDirectory
    let vault: Vault
    let stores: KeyStores

    init() async throws {
        dir = try TemporaryDirectory()
        stores = KeyStores(configuration: KeyStoreConfiguration(localFolder: dir.file("keys")))
        for name in ["a", "b"] {
            _ = try await stores.store(for: KeyReference(scheme: "local", keyID: "")).createKey(name: name)
        }
        let store = try SQLiteRecordStore(path: ":memory:")
        try await store.migrate()
        let metrics = GatewayMetrics()
        let audit = AuditLog(store: store, metrics: metrics, logger: Logger(label: "test"), alerts: AlertCenter(configuration: .init()))
        vault = Vault(keyStores: stores, limits: CacheLimits(maxAge: 60, maxMessages: 100_000), metrics: metrics, audit: audit, tenants: store)
    }

    func tenant(_ name: String) -> Tenant { Tenant(name: name, key: "local:\(name)", createdAt: 0) }

    /// A message as an app would send it: the tenant's key, the given context.
    func message(_ text: String, key: String, context: EncryptionContext) async throws -> [UInt8] {
        let keyring = KeyStoreKeyring(store: try stores.store(for: KeyReference.parse(key)), keyID: String(key.dropFirst("local:".count)))
        return try await Message.encrypt(Array(text.utf8), materialsManager: DefaultMaterialsManager(keyring: keyring), context: context)
    }

    @Test func opensARequestOfItsTenantAndNamesItsMessage() async throws {
        let sealed = try await message("{\"model\":\"m\"}", key: "local:a", context: Vault.requestContext("a"))
        let opened = try await vault.openRequest(sealed, of: tenant("a"))
        #expect(opened.plaintext == Array("{\"model\":\"m\"}".utf8))
        let header = try sealed.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }
        #expect(opened.requestID == Hex.encode(header.messageID))
        #expect(opened.key == "local:a")
    }

    @Test func duringAReKeyARequestUnderThePreviousKeyOpensAndIsAnsweredUnderIt() async throws {
        let moving = Tenant(name: "a", key: "local:b", createdAt: 0, previousKey: "local:a")
        let sealed = try await message("{}", key: "local:a", context: Vault.requestContext("a"))
        let opened = try await vault.openRequest(sealed, of: moving)
        #expect(opened.key == "local:a")
        let answer = try await vault.answerSealer(for: moving, key: opened.key).seal(Array("{}".utf8), requestID: opened.requestID)
        let keyring = KeyStoreKeyring(store: try stores.store(for: KeyReference.parse("local:a")), keyID: "a")
        _ = try await Message.decrypt(answer, materialsManager: DefaultMaterialsManager(keyring: keyring))
        // A tenant not moving does not try any other key.
        await #expect(throws: GatewayError.self) { _ = try await vault.openRequest(sealed, of: tenant("b")) }
    }

    @Test func refusesAnotherTenantsOrPurposesContextWithoutNamingItsValue() async throws {
        for context: EncryptionContext in [["keyward:tenant": "b", "keyward:purpose": "request"],
                                           ["keyward:tenant": "a", "keyward:purpose": "response"],
                                           ["keyward:tenant": "a"]] {
            let sealed = try await message("{}", key: "local:a", context: context)
            do {
                _ = try await vault.openRequest(sealed, of: tenant("a"))
                Issue.record("opened a message with context \(context)")
            } catch let e as GatewayError {
                #expect(e.code == "invalid_encryption_context")
                #expect(!e.message.contains("\"b\"") && !e.message.contains("= b") && !e.message.contains("= response"))
            }
        }
    }

    @Test func refusesWrongKeysAlterationsAndTruncations() async throws {
        let wrongKey = try await message("{}", key: "local:b", context: Vault.requestContext("a"))
        let good = try await message("{\"x\":1}", key: "local:a", context: Vault.requestContext("a"))
        var altered = good
        altered[altered.count - 3] ^= 1
        for bad in [wrongKey, altered, Array(good.prefix(good.count - 1)), Array(good.prefix(10)), [], Array("{}".utf8)] {
            do {
                _ = try await vault.openRequest(bad, of: tenant("a"))
                Issue.record("opened a bad message")
            } catch let e as GatewayError {
                #expect(e.code == "invalid_ciphertext")
            }
        }
    }

    @Test func answersAreMessagesOfTheResponseContextBoundToTheirRequest() async throws {
        let sealer = try await vault.answerSealer(for: tenant("a"), key: "local:a")
        let sealed = try sealer.seal(Array("{\"id\":\"c1\"}".utf8), requestID: "ab01")
        let keyring = KeyStoreKeyring(store: try stores.store(for: KeyReference.parse("local:a")), keyID: "a")
        let (plaintext, header) = try await Message.decrypt(sealed, materialsManager: DefaultMaterialsManager(keyring: keyring))
        #expect(header.encryptionContext == Vault.answerContext("a"))
        #expect(String(decoding: plaintext, as: UTF8.self) == "{\"id\":\"c1\",\"keyward_request\":\"ab01\"}")
        // One data key for many answers: the same encrypted data key, a new message ID each time.
        let again = try await vault.answerSealer(for: tenant("a"), key: "local:a").seal(Array("{}".utf8), requestID: nil)
        let h2 = try again.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }
        #expect(h2.encryptedDataKeys == header.encryptedDataKeys)
        #expect(h2.messageID != header.messageID)
    }

    @Test func theBindingIsTheLastMemberOfAnObjectAndNothingElse() {
        func bound(_ s: String) -> String { String(decoding: AnswerSealer.binding(Array(s.utf8), to: "ff"), as: UTF8.self) }
        #expect(bound("{}") == "{\"keyward_request\":\"ff\"}")
        #expect(bound(" { } \n") == " { \"keyward_request\":\"ff\"} \n")
        #expect(bound("{\"keyward_request\":\"00\"}") == "{\"keyward_request\":\"00\",\"keyward_request\":\"ff\"}")
        #expect(bound("[1]") == "[1]")
        #expect(String(decoding: AnswerSealer.binding(Array("{\"a\":1}".utf8), [("keyward_request", "\"ff\""), ("keyward_seq", "3")]),
                       as: UTF8.self) == "{\"a\":1,\"keyward_request\":\"ff\",\"keyward_seq\":3}")
        let parsed = try? JSONSerialization.jsonObject(with: Data(bound("{\"keyward_request\":\"00\",\"a\":[{}]}").utf8)) as? [String: Any]
        #expect(parsed?["keyward_request"] as? String == "ff")
    }

    @Test func acceptEncodingListsAreReadWithoutTrappingOnOddForms() {
        #expect(EncryptedExchanges.accepts(["aws-esdk"]))
        #expect(EncryptedExchanges.accepts(["gzip, AWS-ESDK;q=0.5"]))
        #expect(EncryptedExchanges.accepts(["gzip", "aws-esdk"]))
        #expect(!EncryptedExchanges.accepts(["aws-esdk;q=0"]))
        #expect(!EncryptedExchanges.accepts(["aws-esdk; q=0.000"]))
        for odd in ["gzip,;", ";", ",", "", ";;q=", "aws-esdk;", " , aws-esdk ;"] {
            _ = EncryptedExchanges.accepts([odd])  // must not trap
        }
        #expect(EncryptedExchanges.accepts([" , aws-esdk ;"]))
    }
}
