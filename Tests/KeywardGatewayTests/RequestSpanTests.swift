@testable import KeywardGateway
import Testing

@Suite("Request spans")
struct RequestSpanTests {
    /// What a span shows of a request's target: parameters Keyward reads as they came, others
    /// (names included) and anything naming a PKCS#11 PIN redacted; nil when nothing needs it.
    @Test func theTargetIsRedactedBeyondWhatKeywardReads() {
        let cases: [(String, String?)] = [
            ("/v1/files", nil),
            ("/v1/files?limit=2&order=desc", "/v1/files?limit=2&order=desc"),
            ("/v1/files?limit=2&api_key=sk-secret&sk-bare&order=asc", "/v1/files?limit=2&REDACTED&REDACTED&order=asc"),
            ("/v1/files?", "/v1/files?REDACTED"),
            ("/v1/files?after=&&limit=1", "/v1/files?after=&REDACTED&limit=1"),
            ("/admin/v1/audit?key=pkcs11%3Atoken%3Dt%3Bobject%3Dk%3Fpin-value%3D1234&limit=5", "/admin/v1/audit?REDACTED&limit=5"),
            ("/admin/v1/keys/pkcs11%3Atoken%3Dt%3Bobject%3Dk%3Fmodule-path%3D%2Fm.so%26PIN-VALUE%3D1234/disable",
             "/admin/v1/keys/REDACTED/disable"),
            ("/admin/v1/keys/pkcs11%3Atoken%3Dt%3Bobject%3Dk%3Fpin%2Dvalue%3D1234/rotate", "/admin/v1/keys/REDACTED/rotate"),
            ("/admin/v1/keys/pkcs11%3Atoken%3Dt%3Bobject%3Dk%3Fpin-value%3D1234?x=1", "/admin/v1/keys/REDACTED?REDACTED"),
            ("/admin/v1/audit?key=pkcs11%3At%3Fpin%2dvalue%3D1&limit=5", "/admin/v1/audit?REDACTED&limit=5"),
        ]
        for (target, shown) in cases {
            #expect(RequestSpan.redacted(target: target) == shown, "\(target)")
        }
    }
}
