// Package singularity runs Scalebox modules with Apptainer or Singularity
// (SingularityCE and legacy Singularity 3.x).
//
// It has four parts:
//
//   - Tool detection: [Detect] finds apptainer (else singularity) on PATH or
//     at a configured path, runs "<bin> --version" through a batch.Commander seam
//     and parses the flavour and version with the pure [ParseVersion].
//   - Command rendering: [Tool] implements container.Engine. [Tool.Command]
//     renders "<bin> exec …" and the environment the engine process needs:
//     a container's variables travel as APPTAINERENV_/SINGULARITYENV_
//     variables of the engine process, never as --env arguments (Apptainer
//     and Singularity split --env values on commas or trim their quotes,
//     depending on the version) and never through a shell string.
//     Flags that the detected version does not have are refused with a
//     message naming the flag, the tool and its version.
//   - Image inspection: [Inspect] checks a SIF file before use (header,
//     descriptors, primary squashfs partition, architecture, labels,
//     definition file, sha256 digest) and [ClassifyImage] tells SIF files,
//     sandbox directories and docker://, oras://, library:// references apart.
//   - A node-local image cache: [Cache] copies SIF files from a shared file
//     system, or pulls references, into a size-bounded directory keyed by
//     digest, safely when several pilot processes on the node stage the same
//     image at once, and never evicts an image another process is using.
//
// Package siftest builds real SIF files (Debian's mksquashfs plus sif/v2)
// for tests.
package singularity
