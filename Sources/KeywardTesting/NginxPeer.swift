import KeywardBlockingIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An nginx server on loopback, started with the `server { … }` blocks a test writes, and stopped
/// (SIGKILL, reaped) when released: one process (no master), so nothing is left behind. nginx is the real HTTP peer of the HTTP client's tests;
/// `scripts/test` installs it.
public final class NginxPeer: @unchecked Sendable {
    public let folder: TemporaryDirectory
    private let pid: pid_t

    /// Starts nginx with `servers` (text inside `http { … }`) and waits until every port in
    /// `ports` accepts connections, blocking its thread (see ``BlockingIO``).
    public init(servers: String, ports: [Int]) throws {
        folder = try TemporaryDirectory(prefix: "keyward-nginx")
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else { throw PeerError("nginx is not installed (scripts/test installs it)") }
        let conf = """
            daemon off;
            master_process off;
            pid \(folder.file("nginx.pid"));
            error_log \(folder.file("error.log")) warn;
            events { worker_connections 256; }
            http {
                access_log off;
                client_body_temp_path \(folder.file("body"));
                proxy_temp_path \(folder.file("proxy"));
                fastcgi_temp_path \(folder.file("fastcgi"));
                uwsgi_temp_path \(folder.file("uwsgi"));
                scgi_temp_path \(folder.file("scgi"));
                \(servers)
            }
            """
        try conf.write(toFile: folder.file("nginx.conf"), atomically: true, encoding: .utf8)
        var child: pid_t = 0
        let args = [binary, "-p", folder.path, "-c", folder.file("nginx.conf")]
        var argv = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let status = posix_spawn(&child, binary, nil, nil, &argv, environ)
        guard status == 0 else { throw PeerError("cannot start nginx (errno \(status))") }
        pid = child
        for port in ports {
            guard Loopback.waitForPort(port) else {
                kill(pid, SIGKILL)
                var s: Int32 = 0
                waitpid(pid, &s, 0)
                let log = (try? String(contentsOfFile: folder.file("error.log"), encoding: .utf8)) ?? ""
                throw PeerError("nginx did not listen on \(port): \(log)")
            }
        }
    }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// Ports on 127.0.0.1, for the peers tests start.
public enum Loopback {
    /// A port nothing listens on now (the kernel's choice for an ephemeral bind).
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits until something accepts connections on `port`; false after `attempts` tries. It
    /// blocks its thread: from a test, call it (or what calls it) through ``BlockingIO/run(_:)``.
    public static func waitForPort(_ port: Int, attempts: Int = 200, every interval: useconds_t = 25_000) -> Bool {
        for _ in 0..<attempts {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if connected == 0 { return true }
            usleep(interval)
        }
        return false
    }
}

/// Child processes of the peers.
enum Spawn {
    /// Starts `arguments` (the program found on PATH) with its output to /dev/null.
    static func quiet(_ arguments: [String]) throws -> pid_t {
        var child: pid_t = 0
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let status = posix_spawnp(&child, arguments[0], &actions, nil, &argv, environ)
        guard status == 0 else { throw PeerError("cannot start \(arguments[0]) (errno \(status))") }
        return child
    }

    /// SIGKILL (a child inherits the test threads' blocked SIGTERM), then reaped.
    static func stop(_ pid: pid_t) {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// A peer that could not be started; says which and why.
public struct PeerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A throw-away certificate authority and a server certificate it signed for `localhost` and
/// 127.0.0.1, made with the openssl command line.
public struct TestCertificates: Sendable {
    public let caFile: String
    public let certificateFile: String
    public let keyFile: String

    public init(in folder: TemporaryDirectory) throws {
        caFile = folder.file("ca.pem")
        certificateFile = folder.file("server.pem")
        keyFile = folder.file("server.key")
        let caKey = folder.file("ca.key"), request = folder.file("server.csr"), ext = folder.file("server.ext")
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: ext, atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", caFile, "-days", "2",
                          "-subj", "/CN=Keyward Test CA"])
        try Self.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", request, "-subj", "/CN=localhost"])
        try Self.openssl(["x509", "-req", "-in", request, "-CA", caFile, "-CAkey", caKey, "-CAcreateserial", "-out", certificateFile,
                          "-days", "2", "-extfile", ext])
    }

    static func openssl(_ arguments: [String]) throws {
        let child = try Spawn.quiet(["/usr/bin/openssl"] + arguments)
        var status: Int32 = 0
        waitpid(child, &status, 0)
        guard status == 0 else { throw PeerError("openssl \(arguments.first ?? "") failed (status \(status))") }
    }
}
