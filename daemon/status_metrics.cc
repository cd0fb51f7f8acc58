#include "daemon/status_metrics.h"

#include <cmath>

#include "metrics/prometheus_text.h"

namespace understudy::daemon {
namespace {

constexpr const char* kNodeStates[] = {"idle",     "backup", "fencing",     "down",
                                       "isolated", "ended",  "taking-over", "primary"};
constexpr const char* kShadowStates[] = {"none",     "starting", "running", "restarting",
                                         "given-up", "live",     "exited"};

}  // namespace

std::string StatusMetrics(const pb::StatusReply& st, double journal_bytes) {
  metrics::MetricsText m;
  const bool primary = st.role() == "primary";
  m.Gauge("understudy_role", "This node's role: 1 for the role it has (backup or primary).",
          primary ? 0 : 1, {{"role", "backup"}});
  m.Gauge("understudy_role", "", primary ? 1 : 0, {{"role", "primary"}});
  for (const char* s : kNodeStates)
    m.Gauge("understudy_node_state", "The node's state (daemon/node.h): 1 for the current one.",
            st.state() == s ? 1 : 0, {{"state", s}});
  m.Gauge("understudy_up_seconds", "Seconds since understudyd started.", st.uptime_ms() / 1000.0);
  m.Gauge("understudy_primary_connected", "1 while the primary's recorder is connected.",
          st.primary().connected() ? 1 : 0);
  const int64_t hb = st.primary().last_heartbeat_ms_ago();
  m.Gauge("understudy_heartbeat_age_seconds",
          "Seconds since the last message from the primary (NaN: none yet).",
          hb < 0 ? NAN : hb / 1000.0);
  m.Gauge("understudy_heartbeat_interval_seconds", "The heartbeat interval (--heartbeat-ms).",
          st.heartbeat_ms() / 1000.0);
  m.Gauge("understudy_heartbeat_budget_seconds",
          "Silence after which the primary counts as dead (interval x --missed-heartbeats).",
          st.heartbeat_ms() * st.missed_heartbeats() / 1000.0);
  m.Gauge("understudy_lag_events", "Seqs the primary wrote that this backup has not acked.",
          static_cast<double>(st.lag().events()));
  m.Gauge("understudy_lag_bytes", "Bytes of the frames not acked yet.",
          static_cast<double>(st.lag().bytes()));
  m.Gauge("understudy_lag_seconds", "Age of the oldest frame not acked yet.",
          st.lag().ms() / 1000.0);
  m.Gauge("understudy_primary_last_seq", "The primary's journal end (its last heartbeat).",
          static_cast<double>(st.primary().last_seq()));
  m.Gauge("understudy_replica_last_seq", "Highest seq written to the replica.",
          static_cast<double>(st.replica().last_seq()));
  m.Gauge("understudy_replica_durable_seq", "Highest seq acked (per the fsync policy).",
          static_cast<double>(st.replica().durable_seq()));
  m.Counter("understudy_replica_received_bytes_total", "Bytes received on the current journal.",
            static_cast<double>(st.replica().bytes()));
  m.Gauge("understudy_replica_persist_failing", "1 while the replica cannot be written.",
          st.replica().persist_error().empty() ? 0 : 1);
  // The revolving journal (issue 12 part 6): both nodes' journals on disk.
  const auto& ri = st.replica();
  if (ri.disk_segments() > 0) {
    m.Gauge("understudy_replica_journal_bytes", "Bytes of the replica's segment files.",
            static_cast<double>(ri.disk_bytes()));
    m.Gauge("understudy_replica_journal_segments", "Segment files of the replica.",
            static_cast<double>(ri.disk_segments()));
    m.Gauge("understudy_replica_journal_first_seq",
            "Base seq of the replica's first segment (above 1 once pruned).",
            static_cast<double>(ri.first_seq()));
  }
  m.Counter("understudy_journal_pruned_segments_total",
            "Replica segments removed behind a current checkpoint since the daemon started.",
            static_cast<double>(ri.pruned_segments()));
  m.Counter("understudy_journal_pruned_bytes_total", "Their bytes.",
            static_cast<double>(ri.pruned_bytes()));
  if (st.primary().journal_segments() > 0) {
    m.Gauge("understudy_primary_journal_bytes",
            "Bytes of the primary's local journal segments (its heartbeats).",
            static_cast<double>(st.primary().journal_disk_bytes()));
    m.Gauge("understudy_primary_journal_segments", "Segment files of the primary's journal.",
            static_cast<double>(st.primary().journal_segments()));
    m.Gauge("understudy_primary_journal_first_seq", "Base seq of the primary's first segment.",
            static_cast<double>(st.primary().journal_first_seq()));
  }
  if (journal_bytes >= 0)
    m.Gauge("understudy_journal_disk_bytes", "Bytes the replica journals take on disk.",
            journal_bytes);
  // The primary reports its commit round trip as quantiles over its last
  // frames; the histogram with buckets is on the primary's own endpoint.
  const auto& p = st.primary();
  m.Summary("understudy_commit_round_trip_seconds",
            "Output commit round trip at the primary (frame sent -> ack), over its last frames.",
            {{0.5, p.commit_p50_us() / 1e6}, {0.99, p.commit_p99_us() / 1e6}}, p.commit_frames());
  m.Counter("understudy_primary_reconnects_total", "Times the primary's recorder reconnected.",
            static_cast<double>(p.reconnects()));
  m.Gauge("understudy_output_gate_open",
          "1 while the primary's outputs leave unprotected (--on-backup-loss continue).",
          p.gate_opened() ? 1 : 0);
  m.Gauge("understudy_outputs_stalled", "1 while the primary's outputs wait for this backup.",
          p.stalled().empty() ? 0 : 1);
  const auto& sh = st.shadow();
  for (const char* s : kShadowStates)
    m.Gauge("understudy_shadow_state", "The shadow's state: 1 for the current one.",
            sh.state() == s ? 1 : 0, {{"state", s}});
  m.Gauge("understudy_shadow_healthy", "1 when the shadow can take over.", sh.healthy() ? 1 : 0);
  m.Gauge("understudy_shadow_events_consumed", "Events the shadow has consumed.",
          static_cast<double>(sh.events_done()));
  m.Gauge("understudy_shadow_restarts", "Shadow restarts in the current restart window.",
          sh.restarts());
  m.Counter("understudy_divergences_total", "Shadows that diverged since the daemon started.",
            static_cast<double>(sh.divergences()));
  m.Counter("understudy_failovers_total", "Takeovers by this node since the daemon started.",
            static_cast<double>(st.failovers()));
  m.Gauge("understudy_alarms", "Alarms in the daemon's list (the last 50, as 'status' shows).",
          st.alarms_size());
  m.Gauge("understudy_escape_audit_escapes",
          "Unrecorded nondeterministic calls the primary's escape audit saw.",
          static_cast<double>(p.audit_escapes()));
  return m.str();
}

}  // namespace understudy::daemon
