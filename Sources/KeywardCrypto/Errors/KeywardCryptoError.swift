// Re-exported: `CodedError` was this library product's before it moved to a module of its own,
// and its users (and `KeywardTesting`'s `expectError`) name it.
@_exported import KeywardErrors

/// An error from the encryption core.
///
/// `description` names the code and a reason that never contains key material or plaintext, so it
/// is safe for logs and for users. Two errors are equal when their codes are.
public struct KeywardCryptoError: CodedError {
    /// What went wrong, as a value a caller can act on. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case malformedMessage = "malformed_message"
            case truncatedMessage = "truncated_message"
            case trailingBytes = "trailing_bytes"
            case base64Input = "base64_input"
            case authenticationFailed = "authentication_failed"
            case signatureInvalid = "signature_invalid"
            case commitmentMismatch = "commitment_mismatch"
            case unsupportedAlgorithm = "unsupported_algorithm"
            case commitmentPolicy = "commitment_policy"
            case noDecryptableKey = "no_decryptable_key"
            case encryptionContextMismatch = "encryption_context_mismatch"
            case invalidEncryptionContext = "invalid_encryption_context"
            case tooManyEncryptedDataKeys = "too_many_encrypted_data_keys"
            case invalidKey = "invalid_key"
            case invalidArgument = "invalid_argument"
            case limitExceeded = "limit_exceeded"
            case internalError = "internal_error"
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The input is not a well-formed message (bad version, lengths, or fields).
        public static let malformedMessage = Code(.malformedMessage)
        /// The message ended before it was complete.
        public static let truncatedMessage = Code(.truncatedMessage)
        /// Bytes follow a complete message.
        public static let trailingBytes = Code(.trailingBytes)
        /// The input looks like a base64-encoded message; decode it first.
        public static let base64Input = Code(.base64Input)
        /// A header or frame failed authentication: the message was altered or the key is wrong.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The message signature does not verify.
        public static let signatureInvalid = Code(.signatureInvalid)
        /// The key commitment in the header does not match the data key.
        public static let commitmentMismatch = Code(.commitmentMismatch)
        /// The algorithm suite is unknown or not allowed here.
        public static let unsupportedAlgorithm = Code(.unsupportedAlgorithm)
        /// The commitment policy forbids this algorithm suite.
        public static let commitmentPolicy = Code(.commitmentPolicy)
        /// None of the given keys could decrypt any of the message's encrypted data keys.
        public static let noDecryptableKey = Code(.noDecryptableKey)
        /// The message's encryption context lacks a required pair.
        public static let encryptionContextMismatch = Code(.encryptionContextMismatch)
        /// An encryption context is not acceptable (reserved prefix, too long, invalid UTF-8).
        public static let invalidEncryptionContext = Code(.invalidEncryptionContext)
        /// More encrypted data keys than the configured maximum.
        public static let tooManyEncryptedDataKeys = Code(.tooManyEncryptedDataKeys)
        /// A wrapping key is unusable (wrong size, not parseable, public key used to decrypt).
        public static let invalidKey = Code(.invalidKey)
        /// A parameter is out of range.
        public static let invalidArgument = Code(.invalidArgument)
        /// A size limit of the format was reached.
        public static let limitExceeded = Code(.limitExceeded)
        /// A cryptographic library call failed unexpectedly.
        public static let internalError = Code(.internalError)

        public var description: String { backing.rawValue }
    }

    /// The error's code.
    public let code: Code
    public let reason: String
    public let file: String
    public let line: Int

    public init(_ code: Code, _ reason: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

}
