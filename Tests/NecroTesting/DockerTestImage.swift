import Foundation

/// The image the Docker tests run: busybox, and git with the libraries it links, from this
/// machine's own files, `docker import`ed (no registry needed). Made once per test process.
public enum DockerTestImage {
    public static let name = "necro-test:busybox-git"

    /// Nil once the image is there; else why it is not (no engine, no busybox).
    public static let problem: String? = {
        let script = "docker image inspect \(name) >/dev/null 2>&1 || \(repositoryRoot)/Scripts/busybox-image.sh \(name)"
        guard let result = try? runProcess("/bin/sh", ["-c", script]) else { return "cannot run sh" }
        return result.status == 0 ? nil : "cannot make the test image \(name): \(result.stderr)"
    }()

    /// An image with this build's `necro` (and the libraries it links) at /usr/local/bin/necro,
    /// besides busybox and git: for containers that run `necro runner`. Made once per test process.
    public static let runnerImage = "necro-test:runner"

    /// Nil once `runnerImage` is made from the `necro` under test; else why it is not.
    public static let runnerImageProblem: String? = {
        guard let result = try? runProcess(
            "\(repositoryRoot)/Scripts/busybox-image.sh", [runnerImage, "\(NecroBinary.path)=/usr/local/bin/necro"])
        else { return "cannot run Scripts/busybox-image.sh" }
        return result.status == 0 ? nil : "cannot make the test image \(runnerImage): \(result.stderr)"
    }()

    /// The containers carrying `necro.registry=<label>`, whatever their state, by `docker ps -a`.
    public static func containers(label: String) throws -> [String] {
        let result = try runProcess("/bin/sh", ["-c", "docker ps -aq --filter label=necro.registry=\(label)"])
        return result.stdout.split(separator: "\n").map(String.init)
    }
}
