#if canImport(Glibc)
public import Glibc
#endif

/// What necro makes beside its registry is the user's alone, whatever the umask: folders 0700,
/// files 0600. Runners' logs hold what agents print (secrets included), and the status records
/// and the journal are what recovery trusts.
public enum PrivateFiles {
    /// Folders: the user's alone.
    public static let folderMode: mode_t = 0o700
    /// Files: the user's alone (a umask can only take bits away from this).
    public static let fileMode: mode_t = 0o600

    /// Makes `path` and the folders above it that are missing, each 0700 whatever the umask;
    /// folders that exist are left as they are.
    public static func makeFolder(_ path: String) throws(PrivateFolderError) {
        guard !path.isEmpty else { return }
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, folderMode) == 0 {
                chmod(prefix, folderMode)  // the umask may have taken bits away; it never adds any
            } else if errno != EEXIST {
                throw PrivateFolderError(message: "cannot make the folder \(prefix): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// A folder could not be made.
public struct PrivateFolderError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
