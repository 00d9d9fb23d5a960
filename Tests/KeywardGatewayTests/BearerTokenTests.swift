@testable import KeywardGateway
import Testing

@Suite("Bearer tokens")
struct BearerTokenTests {
    @Test func schemeInAnyCaseAndBlanksAroundTheToken() {
        #expect(Gateway.bearerToken("Bearer kw_abc") == "kw_abc")
        #expect(Gateway.bearerToken("BEARER kw_abc") == "kw_abc")
        #expect(Gateway.bearerToken("bearer \t kw_abc \t") == "kw_abc")
        #expect(Gateway.bearerToken("Bearer ") == "")
        for refused in ["Basic kw_abc", "Bearer", "Bearerkw_abc", "bearer\u{0}kw_abc", "Bear er kw", ""] {
            #expect(Gateway.bearerToken(refused) == nil, "\(refused)")
        }
    }
}
