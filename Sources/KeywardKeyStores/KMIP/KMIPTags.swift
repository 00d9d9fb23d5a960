/// The KMIP 1.4 tags, operations and enumeration values Keyward speaks (KMIP 1.4, sections 9.1.3.1
/// and 9.1.3.2). Only what the key store sends or reads.
enum KMIPTag {
    static let attribute: UInt32 = 0x420008
    static let attributeName: UInt32 = 0x42000A
    static let attributeValue: UInt32 = 0x42000B
    static let batchCount: UInt32 = 0x42000D
    static let batchItem: UInt32 = 0x42000F
    static let blockCipherMode: UInt32 = 0x420011
    static let cryptographicAlgorithm: UInt32 = 0x420028
    static let cryptographicLength: UInt32 = 0x42002A
    static let cryptographicParameters: UInt32 = 0x42002B
    static let cryptographicUsageMask: UInt32 = 0x42002C
    static let ivCounterNonce: UInt32 = 0x42003D
    static let initialDate: UInt32 = 0x420039
    static let name: UInt32 = 0x420053
    static let nameType: UInt32 = 0x420054
    static let nameValue: UInt32 = 0x420055
    static let objectType: UInt32 = 0x420057
    static let operation: UInt32 = 0x42005C
    static let protocolVersion: UInt32 = 0x420069
    static let protocolVersionMajor: UInt32 = 0x42006A
    static let protocolVersionMinor: UInt32 = 0x42006B
    static let requestHeader: UInt32 = 0x420077
    static let requestMessage: UInt32 = 0x420078
    static let requestPayload: UInt32 = 0x420079
    static let responseMessage: UInt32 = 0x42007B
    static let responsePayload: UInt32 = 0x42007C
    static let resultMessage: UInt32 = 0x42007D
    static let resultReason: UInt32 = 0x42007E
    static let resultStatus: UInt32 = 0x42007F
    static let revocationReason: UInt32 = 0x420081
    static let revocationReasonCode: UInt32 = 0x420082
    static let state: UInt32 = 0x42008D
    static let templateAttribute: UInt32 = 0x420091
    static let uniqueIdentifier: UInt32 = 0x420094
    static let data: UInt32 = 0x4200C2
    static let tagLength: UInt32 = 0x4200CE
    static let authenticatedEncryptionAdditionalData: UInt32 = 0x4200FE
    static let authenticatedEncryptionTag: UInt32 = 0x4200FF
}

/// KMIP operations (enumeration values of the Operation tag).
enum KMIPOperation: UInt32, Sendable {
    case create = 1
    case locate = 8
    case getAttributes = 11
    case activate = 18
    case revoke = 19
    case destroy = 20
    case encrypt = 31
    case decrypt = 32

    var name: String {
        switch self {
        case .create: "Create"
        case .locate: "Locate"
        case .getAttributes: "Get Attributes"
        case .activate: "Activate"
        case .revoke: "Revoke"
        case .destroy: "Destroy"
        case .encrypt: "Encrypt"
        case .decrypt: "Decrypt"
        }
    }
}

/// Enumeration values used in requests and answers.
enum KMIPValue {
    static let objectTypeSymmetricKey: UInt32 = 2
    static let algorithmAES: UInt32 = 3
    static let usageEncrypt: Int32 = 0x04
    static let usageDecrypt: Int32 = 0x08
    static let nameTypeText: UInt32 = 1
    static let modeGCM: UInt32 = 9
    static let revocationCessationOfOperation: UInt32 = 6

    /// Result Status.
    static let success: UInt32 = 0

    /// State.
    enum State: UInt32 {
        case preActive = 1, active, deactivated, compromised, destroyed, destroyedCompromised
    }

    /// Result Reason values the key store tells apart.
    static let reasonItemNotFound: UInt32 = 0x01
    static let reasonAuthenticationNotSuccessful: UInt32 = 0x03
    static let reasonCryptographicFailure: UInt32 = 0x0A
    static let reasonPermissionDenied: UInt32 = 0x0C
    static let reasonObjectAlreadyExists: UInt32 = 0x18
    static let reasonGeneralFailure: UInt32 = 0x100
}
