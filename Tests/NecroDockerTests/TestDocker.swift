import Foundation
import NecroCore
import NecroDocker
import NecroTesting
import Testing

/// The Docker engine the tests use: `DOCKER_HOST`, else the default socket (`Scripts/test` starts
/// one of its own and names it). With no engine there, these tests fail, saying so.
enum TestDocker {
    static let socket: String = (try? DockerEngine.socketPath()) ?? "/var/run/docker.sock"
    static let image = DockerTestImage.name

    /// The engine, the test image made; records why not and throws if there is none.
    static func engine() async throws -> DockerEngine {
        if let imageProblem = DockerTestImage.problem {
            Issue.record("no test image (is a Docker engine running at \(socket)? Scripts/test starts one): \(imageProblem)")
            throw DockerError(status: 0, message: imageProblem)
        }
        return try await DockerEngine.connect(socketPath: socket)
    }

    /// The containers a registry label marks, whatever their state (`docker ps -a --filter label=…`).
    static func containers(_ engine: DockerEngine, label: String) async throws -> [DockerEngine.Listed] {
        try await engine.containers(label: DockerLauncher.labelPrefix + "registry", value: label)
    }
}
