import ArgumentParser
import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroServer

/// `--listen` and `--no-server`, for the commands that serve the API.
struct ServerOptions: ParsableArguments {
    @Option(help: "Where to serve the API and dashboard (HOST:PORT; port 0: any free one). Default 127.0.0.1:7777.")
    var listen: String?

    @Flag(help: "Serve neither the API nor the dashboard on the network: runners reach theirs on a private unix socket.")
    var noServer = false

    static let defaultAddress = ListenAddress(host: "127.0.0.1", port: 7777)

    /// The address asked for, or exit 2 if it is not one.
    func address() throws -> ListenAddress {
        guard let text = listen else { return Self.defaultAddress }
        guard let address = ListenAddress(text) else {
            printError("error: --listen \(text): expected HOST:PORT, such as 127.0.0.1:7777")
            throw ExitStatus.invalidInput
        }
        return address
    }
}

/// The API served beside a dispatcher: its address, and how to stop it.
struct ServedAPI: Sendable {
    let address: ListenAddress
    let keys: AccessKeys
    /// On the network, on the runners' socket, or both.
    let servers: [Task<Void, Never>]
    let metrics: Task<Void, Never>
    /// The private folder of the runners' socket, with `--no-server`.
    var socketFolder: String?

    /// Whether it is served on the network (not only on the runners' socket).
    var isPublic: Bool { address.socket == nil }

    /// Its address as `necro status` shows it.
    var shownAddress: String { isPublic ? address.url : "runners only, on \(address)" }

    /// The dashboard's address, with the admin token in its fragment (never sent to the server;
    /// the page keeps it for its controls).
    var dashboardURL: String { "\(address.url)/#token=\(keys.adminToken)" }

    func stop() {
        for server in servers { server.cancel() }
        metrics.cancel()
        if let socketFolder {
            unlink(socketFolder + "/api.sock")
            rmdir(socketFolder)
        }
    }
}

enum ServerSetup {
    /// The keys, and what runners will be told of the API (its address is set once it listens).
    static func prepare(_ options: ServerOptions, registryFolder: String) throws -> (AccessKeys, RunnerAPI)? {
        if !options.noServer { _ = try options.address() }  // a bad address is an error before anything starts
        do {
            let keys = try AccessKeys.load(folder: registryFolder)
            return (keys, RunnerAPI(token: keys.token(for:)))
        } catch {
            printError("error: \(error)")
            throw ExitStatus.failure
        }
    }

    /// The folder of the runners' socket for the registry at `registry`: under `XDG_RUNTIME_DIR`
    /// (else /tmp), named after the user and the registry, 0700. One found there that is not this
    /// user's own private folder (a link, another owner, open to others) is not used: a fresh
    /// one is made instead.
    static func runnersSocketFolder(registry: String) -> String? {
        let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let folder = "\(runtime)/necro-\(getuid())-\(Dispatcher<ContinuousClock>.runnerMarker(registry: registry))"
        if mkdir(folder, PrivateFiles.folderMode) == 0 { return folder }
        var found = stat()
        if errno == EEXIST, lstat(folder, &found) == 0, found.st_mode & S_IFMT == S_IFDIR, found.st_uid == getuid(), found.st_mode & 0o077 == 0 {
            return folder
        }
        var template = Array("\(runtime)/necro-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!).map { String(cString: $0) } }
    }

    /// Serves the API of `dispatcher` until stopped, at the address asked for; without an explicit
    /// `--listen`, a busy default port falls back to any free one. With `--no-server`, or when
    /// `runnersSocket` (containers on no network reach it so), it is also served on the runners'
    /// private socket.
    static func start(
        _ dispatcher: Dispatcher<ContinuousClock>, registry: SQLiteRegistry, keys: AccessKeys, runnerAPI: RunnerAPI,
        options: ServerOptions, runnersSocket: Bool = false
    ) async throws -> ServedAPI {
        let metrics = DispatcherMetrics(pools: dispatcher.configuration.pools.map(\.name), eventsAfter: (try? registry.lastEventID()) ?? 0)
        let updates = dispatcher.updates()
        let following = Task { await metrics.follow(updates) }
        let api = NecroAPI(registry: registry, dispatcher: dispatcher, keys: keys, metrics: metrics)
        var onSocket: (address: ListenAddress, server: Task<Void, Never>, folder: String)?
        if options.noServer || runnersSocket {
            // Runners still report (heartbeats, events), on a unix socket in a folder of its own,
            // outside the registry's, that only this user can enter; the same one at every start
            // on this registry, so that runners adopted after a restart still reach it.
            guard let folder = runnersSocketFolder(registry: Run.absolute(registry.path)) else {
                following.cancel()
                printError("error: cannot make a folder for the runners' socket: \(String(cString: strerror(errno)))")
                throw ExitStatus.failure
            }
            let address = ListenAddress(socket: folder + "/api.sock")
            unlink(folder + "/api.sock")  // left by a dispatcher that died (this one holds the registry's lock)
            do {
                let (_, server) = try await HTTPServer.start(api, at: address)
                // The folder keeps others out on this machine; a container is given this folder
                // (read-only) and may run as another uid. Each call needs its runner's token.
                chmod(folder + "/api.sock", 0o666)
                runnerAPI.socket = address.socket
                onSocket = (address, server, folder)
            } catch {
                following.cancel()
                try? FileManager.default.removeItem(atPath: folder)
                printError("error: \(error)")
                throw ExitStatus.failure
            }
        }
        if options.noServer, let onSocket {
            return ServedAPI(address: onSocket.address, keys: keys, servers: [onSocket.server], metrics: following, socketFolder: onSocket.folder)
        }
        let wanted = try options.address()
        do {
            let (port, server): (Int, Task<Void, Never>)
            do {
                (port, server) = try await HTTPServer.start(api, at: wanted)
            } catch where options.listen == nil && wanted.port != 0 {
                (port, server) = try await HTTPServer.start(api, at: ListenAddress(host: wanted.host, port: 0))
            }
            let address = ListenAddress(host: wanted.host, port: port)
            runnerAPI.url = address.url
            return ServedAPI(
                address: address, keys: keys, servers: [server] + (onSocket.map { [$0.server] } ?? []), metrics: following,
                socketFolder: onSocket?.folder)
        } catch {
            following.cancel()
            onSocket?.server.cancel()
            printError("error: \(error)")
            throw ExitStatus.failure
        }
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
