import KeywardCrypto
import KeywardErrors
/// An error from a key store, with a code a caller can act on. `description` never contains key
/// material, tokens or PINs.
public struct KeyStoreError: CodedError {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case keyDisabled = "key_disabled"
            case keyPendingDeletion = "key_pending_deletion"
            case keyDestroyed = "key_destroyed"
            case keyNotFound = "key_not_found"
            case keyUnavailable = "key_unavailable"
            case accessDenied = "access_denied"
            case throttled = "throttled"
            case invalidCiphertext = "invalid_ciphertext"
            case invalidArgument = "invalid_argument"
            case alreadyExists = "already_exists"
            case storeCorrupt = "store_corrupt"
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// The key is disabled: nothing can be wrapped or unwrapped until it is enabled.
        public static let keyDisabled = Code(.keyDisabled)
        /// The key is scheduled for deletion and refuses every cryptographic operation.
        public static let keyPendingDeletion = Code(.keyPendingDeletion)
        /// The key's material was destroyed after its waiting period: its data is gone for good.
        public static let keyDestroyed = Code(.keyDestroyed)
        public static let keyNotFound = Code(.keyNotFound)
        /// The store could not be reached or did not answer in time.
        public static let keyUnavailable = Code(.keyUnavailable)
        public static let accessDenied = Code(.accessDenied)
        /// The store refused for load; retried, then reported.
        public static let throttled = Code(.throttled)
        /// The ciphertext is not one this key (with this context) made.
        public static let invalidCiphertext = Code(.invalidCiphertext)
        public static let invalidArgument = Code(.invalidArgument)
        public static let alreadyExists = Code(.alreadyExists)
        /// The store's files are unreadable, or the root key does not open them.
        public static let storeCorrupt = Code(.storeCorrupt)

        public var description: String { backing.rawValue }
    }

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
