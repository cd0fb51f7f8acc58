// ShipCheckpoint: sends one checkpoint's image directory to the backup over
// its own authenticated link (role IMAGES; cluster/link.proto: IMAGE_CHUNK
// per piece of each file, then IMAGE_COMMIT) and waits for the backup's
// IMAGE_RESULT: the backup answers ok only after it verified every file
// against the manifest and made the checkpoint its newest with a rename
// (daemon/image_receiver.h).  A connection of its own, so 100 MB of images
// never delay the journal stream, its acks or its heartbeats.
//
// Threads: any; blocks until the backup answered or `timeout` passed.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "cluster/peer_link.h"
#include "journal/status.h"

namespace understudy::recorder {

struct ShipOptions {
  std::string backup;  // HOST:PORT of understudyd
  cluster::ClusterKey key;
  cluster::LinkIdentity me;
  std::string images_dir;  // holds a manifest (checkpoint/manifest.h)
  std::string image_id;    // its name on the backup: [A-Za-z0-9._-]+
  uint64_t mark_seq = 0;
  uint64_t last_seq = 0;
  size_t chunk_bytes = 1u << 20;
  std::chrono::milliseconds timeout{120000};
};

struct ShipReport {
  uint64_t bytes = 0;
  uint64_t files = 0;
  double ship_ms = 0;       // connected .. IMAGE_RESULT ok
  std::string backup_dir;   // where the backup keeps it
};

Status ShipCheckpoint(const ShipOptions& options, ShipReport* report);

}  // namespace understudy::recorder
