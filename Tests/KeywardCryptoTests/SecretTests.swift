import Testing
@testable import KeywardCrypto

@Suite struct SecretTests {
    @Test func secretsHaveNoPrintableForm() {
        let secret = SecretBytes(copying: Array("hunter2hunter2hunter2hunter2abcd".utf8))
        for text in [String(describing: secret), String(reflecting: secret), "\(secret)", dumped(secret)] {
            #expect(!text.contains("hunter2"))
        }
        #expect("\(secret)" == "<redacted>")
        #expect("\(SigningKey())" == "<redacted>")
    }

    @Test func keyringsPrintNoKeyMaterial() throws {
        let keyring = try RawAESKeyring(namespace: "ns", name: "n", key: SecretBytes(copying: Array("hunter2hunter2hunter2hunter2abcd".utf8)))
        #expect(!dumped(keyring).contains("hunter2"))
        #expect(!String(reflecting: keyring).contains("hunter2"))
    }

    @Test func constantTimeEquality() {
        let a = SecretBytes(copying: [1, 2, 3]), b = SecretBytes(copying: [1, 2, 3]), c = SecretBytes(copying: [1, 2, 4])
        #expect(a.constantTimeEquals(b))
        #expect(!a.constantTimeEquals(c))
        #expect(!a.constantTimeEquals(SecretBytes(copying: [1, 2])))
    }

    @Test func errorsCarryNoSecrets() async throws {
        let message = try await encrypt(Array("plaintext-canary".utf8), keyring: try aesKeyring())
        do {
            _ = try await decrypt(message, keyring: try aesKeyring(seed: 1))
        } catch {
            #expect(!"\(error)".contains("canary"))
            #expect(!String(reflecting: error).contains("canary"))
        }
    }

    func dumped(_ value: Any) -> String {
        var s = ""
        dump(value, to: &s)
        return s
    }
}

/// Tokens, provider keys and credentials: held as wiped bytes, never printed.
@Suite struct SecretStringTests {
    @Test func aSecretNeverPrintsAndKeepsItsBytes() {
        let s = Secret("kw_hunter2")
        #expect("\(s)" == "<redacted>" && String(reflecting: s) == "<redacted>")
        var dumped = ""
        dump(s, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        #expect(s.count == 10 && s.exposed() == "kw_hunter2")
        #expect(s.withUnsafeBytes { Array($0) } == Array("kw_hunter2".utf8))
        #expect(Secret(bytes: SecretBytes(copying: Array("kw_hunter2".utf8))).exposed() == "kw_hunter2")
        #expect(Secret("").exposed() == "")
    }
}
