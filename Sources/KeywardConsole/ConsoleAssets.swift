/// The web console's files (`web/`), compiled into the binary by SwiftPM (`embedInCode`): the
/// console needs no file beside the executable, no Node toolchain and no build step.
public enum ConsoleAssets {
    /// One file: its bytes and content type.
    public struct Asset: Sendable {
        public let bytes: [UInt8]
        public let contentType: String
    }

    /// Every file of `web/`, by name (a test checks that none is missing).
    public static let files: [String: [UInt8]] = [
        "admin.js": PackageResources.admin_js,
        "api.js": PackageResources.api_js,
        "app.js": PackageResources.app_js,
        "audit.js": PackageResources.audit_js,
        "chat.js": PackageResources.chat_js,
        "console.css": PackageResources.console_css,
        "dashboard.js": PackageResources.dashboard_js,
        "dom.js": PackageResources.dom_js,
        "index.html": PackageResources.index_html,
        "keys.js": PackageResources.keys_js,
    ]

    /// The file `name`, or nil.
    public static func asset(named name: String) -> Asset? {
        guard let bytes = files[name] else { return nil }
        return Asset(bytes: bytes, contentType: contentType(name))
    }

    static func contentType(_ name: String) -> String {
        switch name.split(separator: ".").last {
        case "html": "text/html; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        default: "application/octet-stream"
        }
    }
}
