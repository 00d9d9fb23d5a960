@testable import KeywardGateway
import Testing

@Suite("Bearer tokens")
struct BearerTokenTests {
    @Test func schemeInAnyCaseAndBlanksAroundTheToken() {
        #expect(Authenticator.bearerToken("Bearer kw_abc") == "kw_abc")
        #expect(Authenticator.bearerToken("BEARER kw_abc") == "kw_abc")
        #expect(Authenticator.bearerToken("bearer \t kw_abc \t") == "kw_abc")
        #expect(Authenticator.bearerToken("Bearer ") == "")
        for refused in ["Basic kw_abc", "Bearer", "Bearerkw_abc", "bearer\u{0}kw_abc", "Bear er kw", ""] {
            #expect(Authenticator.bearerToken(refused) == nil, "\(refused)")
        }
    }
}
