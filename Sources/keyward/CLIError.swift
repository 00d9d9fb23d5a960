/// A failure of the command line's own I/O (exit code 1); usage errors come from ArgumentParser and
/// the libraries' `invalid_argument` codes (exit code 2).
struct CLIError: Error, CustomStringConvertible {
    let exitCode: Int32
    let description: String

    static func io(_ message: String) -> CLIError { CLIError(exitCode: 1, description: message) }
}
