import Foundation
@testable import KeywardKeyStores
import NIOHTTP1
import Testing

/// What the remote stores make of their settings and of their servers' error answers, without a
/// server: the cases the tests against OpenBao and PyKMIP cannot provoke on demand.
@Suite struct RemoteStoreParsingTests {
    static func kmip(_ server: String, timeout: String? = nil) throws -> KMIPConfiguration {
        var env = ["KEYWARD_KMIP_SERVER": server, "KEYWARD_KMIP_CA": "ca", "KEYWARD_KMIP_CERT": "c", "KEYWARD_KMIP_KEY": "k"]
        env["KEYWARD_KMIP_TIMEOUT_MS"] = timeout
        return try KMIPConfiguration.fromEnvironment(env)
    }

    /// Keyward keeps its own key state under one spelling of each reference: the default mount
    /// written out or not is one Transit key, so revoking either spelling revokes both.
    @Test func referencesHaveOneCanonicalSpelling() throws {
        #expect(try KeyReference.parse("vault-transit:k?mount=transit").canonical == "vault-transit:k")
        #expect(try KeyReference.parse("vault-transit:k").canonical == "vault-transit:k")
        #expect(try KeyReference.parse("vault-transit:k?mount=team/transit").canonical == "vault-transit:k?mount=team/transit")
        #expect(try KeyReference.parse("kmip:name=a").canonical == "kmip:name=a")
        #expect(try KeyReference.parse("local:acme").canonical == "local:acme")
    }

    @Test func kmipServerAddresses() throws {
        for (text, host, port) in [("kms.example", "kms.example", 5696), ("kms.example:15696", "kms.example", 15696),
                                   ("[::1]:5697", "::1", 5697), ("[::1]", "::1", 5696), ("::1", "::1", 5696),
                                   ("127.0.0.1:1", "127.0.0.1", 1)] {
            let c = try Self.kmip(text)
            #expect(c.host == host && c.port == port, "\(text)")
        }
        for bad in ["kms.example:abc", "kms.example:0", "kms.example:70000", "[::1]x", ":5696"] {
            #expect(throws: KeyStoreError.self, "\(bad)") { try Self.kmip(bad) }
        }
        #expect(try Self.kmip("h", timeout: "250").timeout == .milliseconds(250))
        for bad in ["0", "-5", "abc", "99999999999999"] {
            #expect(throws: KeyStoreError.self, "\(bad)") { try Self.kmip("h", timeout: bad) }
        }
    }

    @Test func vaultErrorsMapToOurCodes() {
        func code(_ status: Int, _ errors: [String]) -> (KeyStoreError.Code, Bool) {
            let body = Array(try! JSONEncoder().encode(["errors": errors]))
            let f = VaultClient.failure(status: HTTPResponseStatus(statusCode: status), body: body, what: "decrypt")
            return (f.error.code, f.retryable)
        }
        #expect(code(403, ["1 error occurred:\n\t* permission denied\n\n"]) == (.accessDenied, false))
        #expect(code(404, []) == (.keyNotFound, false))
        #expect(code(400, ["encryption key not found"]) == (.keyNotFound, false))
        #expect(code(400, ["ciphertext or signature version is disallowed by policy (too old)"]) == (.keyDisabled, false))
        #expect(code(400, ["refusing to use soft-deleted key"]) == (.keyDisabled, false))
        #expect(code(400, ["cipher: message authentication failed"]) == (.invalidCiphertext, false))
        #expect(code(400, ["invalid ciphertext length"]) == (.invalidCiphertext, false))
        #expect(code(429, ["request path \"transit/\": rate limit quota exceeded"]) == (.throttled, true))
        #expect(code(503, ["Vault is sealed"]) == (.keyUnavailable, true))
        #expect(code(400, ["missing ciphertext to decrypt"]) == (.invalidArgument, false))
        // A body that is not Vault's error shape still gives a reason without echoing the body.
        let f = VaultClient.failure(status: .badGateway, body: Array("<html>secret-ish</html>".utf8), what: "decrypt")
        #expect(f.error.code == .keyUnavailable && !f.error.reason.contains("secret-ish"))
    }

    @Test func vaultTimeoutsAreBounded() {
        for bad in ["0", "-1", "abc", "4000000"] {
            #expect(throws: KeyStoreError.self, "\(bad)") {
                try VaultConfiguration.fromEnvironment(["VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": "t", "KEYWARD_VAULT_TIMEOUT_MS": bad])
            }
        }
        #expect(throws: KeyStoreError.self) { try VaultConfiguration.fromEnvironment(["VAULT_ADDR": "vault:8200", "VAULT_TOKEN": "t"]) }
        #expect(throws: KeyStoreError.self) { try VaultConfiguration.fromEnvironment(["VAULT_ADDR": "http://v", "VAULT_ROLE_ID": "r"]) }
    }
}
