import CNecroSystem
import Foundation
public import NecroCore

extension LocalProcessLauncher {
    /// Those still alive are adopted: found by the pid and start time recorded at their start or,
    /// should the dispatcher have stopped before recording them, by their status record: locked
    /// from before their supervisor starts until it ends, with the supervisor's pid in it once it
    /// runs. The others ended meanwhile (or never started), and their supervisors recorded how, if
    /// they did. A runner without a status record (started unsupervised) is not adopted: its end
    /// could not be known.
    public func sortOut(_ runners: [RunnerRecord], specs: Set<String>) async throws -> RecoveredRunners {
        var recovered = RecoveredRunners()
        for var runner in runners {
            guard let status = runner.status else {
                recovered.ended.append(EndedRunner(runner: runner, exit: nil))
                continue
            }
            if let pid = runner.pid, let start = runner.processStartTime, ProcessIdentity.isAlive(pid: pid, startTime: start) {
                runner.handle = runner.handle ?? Self.handle(pid: pid, startTime: start).value
                recovered.adopted.append(runner)
                continue
            }
            if runner.pid == nil, let (pid, start) = Self.liveSupervisor(of: runner.id, in: status) {
                let handle = Self.handle(pid: pid, startTime: start)
                runner.pid = pid
                runner.processStartTime = start
                runner.handle = handle.value
                recovered.adopted.append(runner)
                continue
            }
            recovered.ended.append(EndedRunner(runner: runner, exit: RunnerStatusTable.exit(of: runner.id, in: status)))
        }
        return recovered
    }

    /// The supervisor of a runner whose start was not recorded, if it lives: its pid and start
    /// time. A supervisor that has just started writes its pid in a moment: waited for, up to 2 s.
    static func liveSupervisor(of runner: RunnerID, in record: StatusRecord) -> (Int32, UInt64)? {
        for _ in 0..<400 {
            if RunnerStatusTable.exit(of: runner, in: record) != nil { return nil }  // it has ended: its status says how
            switch RunnerStatusTable.supervisor(of: runner, in: record) {
            case .gone:
                return nil
            case .alive(let pid?):
                if let start = ProcessIdentity.startTime(of: pid) { return (pid, start) }
                return nil
            case .alive(nil):
                usleep(5_000)  // its pid is on its way: the supervisor writes it first thing
            }
        }
        return nil
    }
}
