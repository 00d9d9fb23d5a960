/// A command-line failure with its exit code: 2 for usage, 1 for everything that failed at run time.
struct CLIError: Error, CustomStringConvertible {
    let exitCode: Int32
    let description: String

    static func usage(_ message: String) -> CLIError { CLIError(exitCode: 2, description: message) }
    static func io(_ message: String) -> CLIError { CLIError(exitCode: 1, description: message) }
}
