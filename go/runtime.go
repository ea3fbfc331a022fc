package tld

import "syscall"

// Attach attaches the tld_data_map pinned at path ("" means $TLD_MAP_PATH,
// else /sys/fs/bpf/tld/tld_data_map). Attaching the same map again is a
// no-op; up to 16 maps. Every thread registers with it on its next data
// access. Errors wrap syscall.ENOENT (nothing pinned there), EINVAL (not on
// bpffs, not a map, or the wrong type or layout), EPERM or EACCES (privilege
// or file mode), ENOSPC (too many maps). Safe from any goroutine.
func Attach(path string) error {
	if errno, msg := cAttachPath(path); errno != 0 {
		return newError("attach map", path, errno, msg)
	}
	return nil
}

// AttachFD attaches the map behind fd, which the runtime duplicates: the
// caller keeps ownership of fd. Errors as [Attach]; a bad descriptor wraps
// syscall.EINVAL.
func AttachFD(fd int) error {
	if errno, msg := cAttachFD(fd); errno != 0 {
		return newError("attach map", "", errno, msg)
	}
	return nil
}

// SetDynamicReserve sets the bytes every thread block keeps for keys created
// after the first block exists (64 by default, upstream TLD_DYN_DATA_SIZE).
// It may grow until a thread first touches its data, and shrink only while no
// key exists. Errors wrap syscall.EBUSY (too late) or EINVAL (more than a
// block can hold).
func SetDynamicReserve(bytes int) error {
	if bytes < 0 {
		return newError("set dynamic reserve", "", syscall.EINVAL, "negative size")
	}
	if errno, msg := cSetDynDataSize(bytes); errno != 0 {
		return newError("set dynamic reserve", "", errno, msg)
	}
	return nil
}

// MetadataPage returns the address of the process's metadata page: the same
// for every copy of tld in the process (0 if the runtime cannot start).
func MetadataPage() uintptr { return cMetadataPage() }

// LiveBlocks returns the number of thread blocks allocated and not yet
// released, process-wide (all copies of tld).
func LiveBlocks() int { return cLiveBlocks() }

// RuntimeABIVersion returns this copy's runtime ABI version (major<<16 | minor).
func RuntimeABIVersion() uint32 { return cRuntimeABIVersion() }
