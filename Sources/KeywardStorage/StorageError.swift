import KeywardErrors

/// An error from a record store. `description` names the code and a reason that never contains a
/// record's bytes.
public struct StorageError: CodedError {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Hashable, Sendable {
            case alreadyExists = "already_exists"
            case notFound = "not_found"
            case unavailable = "storage_unavailable"
            case corrupt = "storage_corrupt"
            case invalidArgument = "invalid_argument"
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// A row with the same key is already stored.
        public static let alreadyExists = Code(.alreadyExists)
        public static let notFound = Code(.notFound)
        /// The database cannot be opened, is locked for too long, or the disk is full.
        public static let unavailable = Code(.unavailable)
        /// A stored row does not decode.
        public static let corrupt = Code(.corrupt)
        public static let invalidArgument = Code(.invalidArgument)

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
