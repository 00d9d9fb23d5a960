import Foundation
import KeywardStorage
import PostgresNIO

/// A `postgres://user:password@host:port/database?sslmode=…` address. Its description leaves the
/// password out, so the address can be logged.
public struct PostgresURL: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    var password: String?
    public var database: String
    /// `disable`, `prefer` (default) or `require`.
    public var sslMode: String

    /// - Throws: `StorageError.invalidArgument` naming what is wrong (never the password).
    public init(_ string: String) throws {
        guard let c = URLComponents(string: string), ["postgres", "postgresql"].contains(c.scheme ?? "") else {
            throw StorageError(.invalidArgument, "a database address looks like postgres://user:password@host:5432/database")
        }
        host = c.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
        port = c.port ?? 5432
        user = c.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        password = c.password.flatMap { $0.removingPercentEncoding }
        let path = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        database = path.isEmpty ? user : path
        sslMode = c.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer"
        guard ["disable", "prefer", "require"].contains(sslMode) else {
            throw StorageError(.invalidArgument, "sslmode must be disable, prefer or require")
        }
    }

    /// The same server, another database (tests make one per case).
    public func with(database: String) -> PostgresURL {
        var copy = self
        copy.database = database
        return copy
    }

    public var description: String {
        "postgres://\(user)\(password == nil ? "" : ":<redacted>")@\(host):\(port)/\(database)?sslmode=\(sslMode)"
    }

    /// The pool's configuration: `maxConnections` bounds this process's share of the server.
    public func clientConfiguration(maxConnections: Int = 16) throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch sslMode {
        case "disable": tls = .disable
        case "require": tls = .require(.makeClientConfiguration())
        default: tls = .prefer(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: password,
                                                         database: database, tls: tls)
        configuration.options.maximumConnections = maxConnections
        configuration.options.connectTimeout = .seconds(3)
        return configuration
    }

    /// One connection outside the pool (LISTEN needs its own).
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch sslMode {
        case "disable": tls = .disable
        case "require": tls = .require(try .init(configuration: .makeClientConfiguration()))
        default: tls = .prefer(try .init(configuration: .makeClientConfiguration()))
        }
        var c = PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
        c.options.connectTimeout = .seconds(3)
        return c
    }
}
