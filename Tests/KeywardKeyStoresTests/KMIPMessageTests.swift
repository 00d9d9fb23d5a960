import Foundation
@testable import KeywardKeyStores
import Testing

/// Our KMIP messages against bytes a reference client and server exchanged: PyKMIP 0.11's client
/// and server, captured on this machine (an AES-256-GCM Encrypt with additional data, its answer, and
/// two failures). Our request must be byte-equal to the reference client's; the server's answers must
/// decode to what they say.
@Suite struct KMIPMessageTests {
    static func hex(_ parts: [String]) -> [UInt8] { TTLVTests.hex(parts.joined()) }

    /// PyKMIP's client: Encrypt, key "1", AES-GCM with a 16-byte tag, IV 00…0b, the text below.
    static let encryptRequest = hex([
            "42007801000001084200770100000038420069010000002042006a0200000004000000010000000042006b0200000004000000040000000042000d02",
            "00000004000000010000000042000f01000000c042005c05000000040000001f0000000042007901000000a842009407000000013100000000000000",
            "42002b010000003042001105000000040000000900000000420028050000000400000003000000004200ce020000000400000010000000004200c208",
            "0000001168656c6c6f206b6579776172642067636d0000000000000042003d080000000c000102030405060708090a0b000000004200fe0800000019",
            "6b6579776172643a74656e616e743d64656d6f3b6b65793d3100000000000000",
    ])
    static let encryptResponse = hex([
            "42007b01000000c842007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004000000040000000042009209",
            "00000008000000006b1198b842000d0200000004000000010000000042000f010000007042005c05000000040000001f0000000042007f0500000004",
            "000000000000000042007c0100000048420094070000000131000000000000004200c2080000001106d94cef18181d98ee1754379382c0b736000000",
            "000000004200ff08000000102bf0c58cce7f7b5db7d849406e4502b8",
    ])
    static let unknownKeyResponse = hex([
            "42007b01000000b842007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004000000040000000042009209",
            "00000008000000006b1198b842000d0200000004000000010000000042000f010000006042005c05000000040000001f0000000042007f0500000004",
            "000000010000000042007e0500000004000000010000000042007d0700000027436f756c64206e6f74206c6f63617465206f626a6563743a20646f65",
            "732d6e6f742d657869737400",
    ])
    static let preActiveResponse = hex([
            "42007b01000000e042007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004000000040000000042009209",
            "00000008000000006b1198b742000d0200000004000000010000000042000f010000008842005c05000000040000001f0000000042007f0500000004",
            "000000010000000042007e05000000040000000c0000000042007d070000004954686520656e6372797074696f6e206b6579206d7573742062652069",
            "6e207468652041637469766520737461746520746f206265207573656420666f7220656e6372797074696f6e2e00000000000000",
    ])

    @Test func anEncryptRequestIsByteEqualToTheReferenceClients() {
        let payload = KMIPKeyStore.encryptPayload(uid: "1", plaintext: Array("hello keyward gcm".utf8), iv: Array(0...11),
                                                  additionalData: Array("keyward:tenant=demo;key=1".utf8))
        #expect(KMIPClient.request(.encrypt, payload).encoded == Self.encryptRequest)
    }

    @Test func theServersAnswerDecodesToCiphertextAndTag() throws {
        let payload = try KMIPClient.payload(of: try TTLV.decode(Self.encryptResponse), .encrypt)
        #expect(payload[KMIPTag.uniqueIdentifier]?.text == "1")
        #expect(payload[KMIPTag.data]?.bytes == TTLVTests.hex("06d94cef18181d98ee1754379382c0b736"))
        #expect(payload[KMIPTag.authenticatedEncryptionTag]?.bytes == TTLVTests.hex("2bf0c58cce7f7b5db7d849406e4502b8"))
        // An answer to another operation is not taken for this one.
        #expect(throws: KeyStoreError.self) { try KMIPClient.payload(of: try TTLV.decode(Self.encryptResponse), .decrypt) }
    }

    @Test func failuresMapToOurCodes() throws {
        for (bytes, code) in [(Self.unknownKeyResponse, KeyStoreError.Code.keyNotFound), (Self.preActiveResponse, .keyDisabled)] {
            do {
                _ = try KMIPClient.payload(of: try TTLV.decode(bytes), .encrypt)
                Issue.record("a failed result was taken for a payload")
            } catch let f as KMIPClient.Failure {
                #expect(f.keyStoreError(.encrypt).code == code, "\(f.message)")
            }
        }
    }
}
