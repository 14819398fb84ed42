import ArgumentParser
import Foundation
import NecroCore

/// `necro bench`: end-to-end benchmarks, run on a release build.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the dispatcher end to end (build with -c release first).",
        subcommands: [BenchLoad.self, BenchRun.self, BenchDocker.self, BenchRunner.self, BenchReportEvents.self]
    )
}

/// `necro bench load`: load and validate a generated spec of a million tasks.
struct BenchLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Generate a large tasks.md, then time `necro validate` on it: wall time and peak memory.",
        discussion: """
            The spec is a layered DAG: task i depends on tasks drawn from the 1,000 before it. Each run is \
            a fresh `necro validate` process, measured with wait4 (wall clock and ru_maxrss). The baseline, \
            measured in the same run, is `wc -l` reading the same file: the cost of the bytes alone.
            """
    )

    @Option(help: "Number of tasks.")
    var tasks = 1_000_000

    @Option(help: "Number of dependency edges.")
    var edges = 2_000_000

    @Option(help: "Measured runs; the median is reported.")
    var runs = 3

    @Option(help: "Where to write the spec (default: a temporary folder, removed afterwards).")
    var output: String?

    enum Format: String, CaseIterable, ExpressibleByArgument {
        case md, json, yaml
    }

    @Option(
        name: .customLong("format"), parsing: .upToNextOption,
        help: "The formats to measure, each the same tasks (md, json, yaml; default all three).")
    var formats: [Format] = Format.allCases

    func validate() throws {
        guard tasks >= 2, edges >= 0, edges <= (tasks - 1) * 1000 / 2, runs >= 1 else {
            throw ValidationError("need tasks >= 2, 0 <= edges <= (tasks - 1) * 500, runs >= 1")
        }
    }

    func run() async throws {
        let folder = output ?? NSTemporaryDirectory() + "necro-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder + "/bench", withIntermediateDirectories: true)
        defer { if output == nil { try? FileManager.default.removeItem(atPath: folder) } }
        print("spec: \(tasks) tasks, \(edges) edges")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB")
        let necro = CommandLine.arguments[0].contains("/")
            ? URL(fileURLWithPath: CommandLine.arguments[0]).path : "/proc/self/exe"
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: necro)) ?? necro
        var times: [Format: Double] = [:]
        for format in formats {
            let spec = folder + "/bench/tasks.\(format == .md ? "md" : format.rawValue)"
            let generated = ContinuousClock().measure { try? Self.generate(path: spec, tasks: tasks, edges: edges, format: format) }
            let size = (try FileManager.default.attributesOfItem(atPath: spec)[.size] as? Int) ?? 0
            // The baseline and the loads alternate, each against the same file.
            var baseline: [Measurement] = []
            var measured: [Measurement] = []
            for _ in 0..<runs {
                baseline.append(try Measurement.run("/usr/bin/wc", ["-l", spec]))
                let result = try Measurement.run(binary, ["validate", spec])
                guard result.status == 0 else { throw ValidationError("necro validate \(spec) failed with status \(result.status)") }
                measured.append(result)
            }
            try? FileManager.default.removeItem(atPath: spec)
            let base = Measurement.median(baseline)
            let load = Measurement.median(measured)
            times[format] = load.seconds
            print("\(format.rawValue): \(size / 1_000_000) MB, generated in \(self.format(generated.seconds)) s")
            print("  baseline (wc -l):  \(self.format(base.seconds)) s, peak \(base.peakMB) MB")
            print("  necro validate:    \(self.format(load.seconds)) s, peak \(load.peakMB) MB   (median of \(runs))")
            if format == .md {
                print("  targets: under 2 s and under 1024 MB → \(load.seconds < 2 && load.peakMB < 1024 ? "met" : "NOT met")")
            } else if let markdown = times[.md] {
                let ratio = load.seconds / markdown
                let target: Double = format == .json ? 2 : 5
                print("  \(String(format: "%.1f", ratio))× markdown's time; target within \(Int(target))× → \(ratio <= target ? "met" : "NOT met")")
            }
        }
    }

    private func format(_ seconds: Double) -> String { String(format: "%.3f", seconds) }

    /// Writes the spec with a buffered writer; deterministic for given sizes, the same tasks in
    /// every format.
    static func generate(path: String, tasks: Int, edges: Int, format: Format = .md) throws {
        guard let file = fopen(path, "w") else { throw ValidationError("cannot write \(path)") }
        defer { fclose(file) }
        var random = SplitMix64(seed: 2026)
        let skills = ["backend", "frontend", "database", "devops"]
        var remainingEdges = edges
        var buffer: String
        switch format {
        case .md: buffer = "# Generated benchmark spec\n\n"
        case .json: buffer = "{\"spec_name\": \"bench\", \"tasks\": [\n"
        case .yaml: buffer = "spec_name: bench\ntasks:\n"
        }
        buffer.reserveCapacity(1 << 20)
        for i in 1...tasks {
            // Spread the edges evenly over the tasks that can have them.
            let left = tasks - i + 1
            let share = i == 1 ? 0 : min(min(i - 1, 1000), (remainingEdges + left - 1) / left)
            var chosen = Set<Int>()
            while chosen.count < share { chosen.insert(i - 1 - Int(random.next() % UInt64(min(i - 1, 1000)))) }
            remainingEdges -= share
            let dependencies = chosen.sorted()
            let skill = skills[i % skills.count]
            switch format {
            case .md:
                buffer += "- [ ] \(i). Generated task \(i)\n  - _Skill: \(skill)_\n"
                if !dependencies.isEmpty { buffer += "  - _Depends: " + dependencies.map(String.init).joined(separator: ", ") + "_\n" }
            case .json:
                buffer += "  {\"id\": \"\(i)\", \"title\": \"Generated task \(i)\", \"required_skill\": \"\(skill)\""
                if !dependencies.isEmpty { buffer += ", \"dependencies\": [" + dependencies.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
                buffer += i == tasks ? "}\n" : "},\n"
            case .yaml:
                buffer += "  - id: \"\(i)\"\n    title: Generated task \(i)\n    required_skill: \(skill)\n"
                if !dependencies.isEmpty { buffer += "    dependencies: [" + dependencies.map { "\"\($0)\"" }.joined(separator: ", ") + "]\n" }
            }
            if buffer.utf8.count > 1 << 20 {
                fputs(buffer, file)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        if format == .json { buffer += "]}\n" }
        fputs(buffer, file)
    }
}

/// One child process: wall time and peak resident memory.
struct Measurement {
    var seconds: Double
    var peakMB: Int
    var status: Int32

    static func run(_ executable: String, _ arguments: [String]) throws -> Measurement {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let start = ContinuousClock.now
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw ValidationError("cannot start \(executable): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let elapsed = (ContinuousClock.now - start).seconds
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Measurement(seconds: elapsed, peakMB: Int(usage.ru_maxrss) / 1024, status: exit)
    }

    static func median(_ values: [Measurement]) -> Measurement {
        let sorted = values.sorted { $0.seconds < $1.seconds }
        var middle = sorted[sorted.count / 2]
        middle.peakMB = values.map(\.peakMB).max() ?? 0
        return middle
    }
}
