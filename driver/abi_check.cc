// The ring's numeric enums (interposer/abi.h) and their journal twins
// (journal/event.proto) hold the same values: the record codec copies cls,
// action, a sync record's call and a lifecycle record's call straight from
// one to the other, so a value renumbered on one side only would be recorded
// as another kind without any error.  These assertions make such a change
// fail to compile.  Nothing here generates code.
#include "interposer/abi.h"
#include "journal/event.pb.h"

namespace understudy::driver {
namespace {

namespace pb = journal::pb;

// The two enums are distinct types (comparing them directly warns); their
// numbers are what the codec copies.
template <typename Ring, typename Journal>
constexpr bool Twin(Ring ring, Journal journal) {
  return static_cast<long long>(ring) == static_cast<long long>(journal);
}

// RecordHeader::cls <-> Event.cls.
static_assert(Twin(abi::kClsExternalInput, pb::EXTERNAL_INPUT));
static_assert(Twin(abi::kClsReadiness, pb::READINESS));
static_assert(Twin(abi::kClsTime, pb::TIME));
static_assert(Twin(abi::kClsRandomness, pb::RANDOMNESS));
static_assert(Twin(abi::kClsIdentity, pb::IDENTITY));
static_assert(Twin(abi::kClsSignal, pb::SIGNAL));
static_assert(Twin(abi::kClsThreadOrder, pb::THREAD_ORDER));
static_assert(Twin(abi::kClsProcess, pb::PROCESS));
static_assert(Twin(abi::kClsLocalFile, pb::LOCAL_FILE));
static_assert(Twin(abi::kClsOutput, pb::OUTPUT));
static_assert(Twin(abi::kClsDeterministic, pb::DETERMINISTIC));
static_assert(Twin(pb::EventClass_MAX, abi::kClsDeterministic), "a class without a ring twin");

// RecordHeader::action <-> Event.action.
static_assert(Twin(abi::kActEmulate, pb::EMULATE));
static_assert(Twin(abi::kActReexecCheck, pb::REEXECUTE_CHECK));
static_assert(Twin(abi::kActSuppressCheck, pb::SUPPRESS_CHECK));
static_assert(Twin(pb::ReplayAction_MAX, abi::kActSuppressCheck), "an action without a ring twin");

// A kRecSync record's call <-> SyncEvent.op.
static_assert(Twin(abi::kSyncMutexLock, pb::SyncEvent::MUTEX_LOCK));
static_assert(Twin(abi::kSyncMutexTrylock, pb::SyncEvent::MUTEX_TRYLOCK));
static_assert(Twin(abi::kSyncRwRdlock, pb::SyncEvent::RWLOCK_RDLOCK));
static_assert(Twin(abi::kSyncRwWrlock, pb::SyncEvent::RWLOCK_WRLOCK));
static_assert(Twin(abi::kSyncCondWake, pb::SyncEvent::COND_WAKE));
static_assert(Twin(abi::kSyncRwTry, pb::SyncEvent::RWLOCK_TRY));
static_assert(Twin(abi::kSyncMutexTimedlock, pb::SyncEvent::MUTEX_TIMEDLOCK));
static_assert(Twin(abi::kSyncStdio, pb::SyncEvent::STDIO_LOCK));
static_assert(Twin(abi::kSyncSemWait, pb::SyncEvent::SEM_WAIT));
static_assert(Twin(abi::kSyncBarrier, pb::SyncEvent::BARRIER));
static_assert(Twin(pb::SyncEvent::Op_MAX, abi::kSyncBarrier), "a sync op without a ring twin");

// A kRecLifecycle record's call <-> LifecycleEvent.kind.
static_assert(Twin(abi::kLifeThreadCreate, pb::LifecycleEvent::THREAD_CREATE));
static_assert(Twin(abi::kLifeThreadExit, pb::LifecycleEvent::THREAD_EXIT));
static_assert(Twin(abi::kLifeFork, pb::LifecycleEvent::FORK));
static_assert(Twin(abi::kLifeExec, pb::LifecycleEvent::EXEC));
static_assert(Twin(abi::kLifeExit, pb::LifecycleEvent::EXIT));
static_assert(Twin(abi::kLifeWait, pb::LifecycleEvent::WAIT));
static_assert(Twin(abi::kLifeThreadStart, pb::LifecycleEvent::THREAD_START));
static_assert(Twin(pb::LifecycleEvent::Kind_MAX, abi::kLifeThreadStart), "a lifecycle kind without a ring twin");

}  // namespace
}  // namespace understudy::driver
