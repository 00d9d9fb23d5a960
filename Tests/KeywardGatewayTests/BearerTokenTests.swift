import KeywardCrypto
import Foundation
@testable import KeywardGateway
import Testing

@Suite("Bearer tokens")
struct BearerTokenTests {
    /// A new token is `kw_` and the unpadded base64url of 32 random bytes, as Foundation encodes
    /// them, written into wiped memory; every length's tail (0, 1 or 2 bytes left) is covered.
    @Test func tokensAreBase64URLWrittenIntoSecretBytes() {
        for count in 0...40 {
            let random = SecretBytes(randomCount: count)
            let bytes = random.withUnsafeBytes { Array($0) }
            let expected = "kw_" + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Secret(bytes: Tokens.token(random: random)).exposed() == expected, "\(count) bytes")
        }
        let (token, id) = Tokens.generate()
        let text = token.exposed()
        #expect(text.hasPrefix("kw_") && text.count == 46 && id.hasPrefix("tok_"))
        #expect(text.dropFirst(3).allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        #expect(Tokens.generate().value.exposed() != text)
    }

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
