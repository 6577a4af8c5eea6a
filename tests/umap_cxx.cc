// umap from C++: umap/umap.h compiles as C++ and a mapped file reads back right.
// Exit status 0 pass, 1 fail, 77 skip (meson's convention).
#include <umap/umap.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace {

int fail(const std::string &what)
{
	std::fprintf(stderr, "umap_cxx: %s\n", what.c_str());
	return 1;
}

int scratch_file(size_t words)
{
	const char *dir = std::getenv("TIDE_TEST_DIR");
	std::string path = std::string(dir && *dir ? dir : "/var/tmp") + "/tide-umap-cxx-XXXXXX";
	std::vector<char> name(path.begin(), path.end());
	name.push_back('\0');
	int fd = mkstemp(name.data());
	if (fd < 0)
		return -1;
	unlink(name.data());
	std::vector<uint64_t> data(words);
	std::iota(data.begin(), data.end(), uint64_t{1000});
	size_t bytes = words * sizeof(uint64_t);
	if (pwrite(fd, data.data(), bytes, 0) != static_cast<ssize_t>(bytes)) {
		close(fd);
		return -1;
	}
	return fd;
}

} // namespace

int main()
{
	const size_t words = (1u << 20) / sizeof(uint64_t);
	const size_t bytes = words * sizeof(uint64_t);
	int fd = scratch_file(words);
	if (fd < 0)
		return fail(std::string("scratch file: ") + std::strerror(errno));

	void *base = umap(nullptr, bytes, PROT_READ, UMAP_PRIVATE, fd, 0);
	if (base == UMAP_FAILED) {
		int err = errno;
		if (err == EPERM || err == ENOSYS) {
			std::fprintf(stderr, "umap_cxx: skipped, userfaultfd unavailable: %s\n",
				     std::strerror(err));
			return 77;
		}
		return fail(std::string("umap: ") + std::strerror(err));
	}

	// umap's C++ examples spell the item type without `struct`.
	const uint64_t page = umapcfg_get_umap_page_size();
	std::vector<umap_prefetch_item> items;
	for (uint64_t off = 0; off < bytes && items.size() < 4; off += page)
		items.push_back(umap_prefetch_item{static_cast<char *>(base) + off});
	umap_prefetch(static_cast<int>(items.size()), items.data());

	const uint64_t *v = static_cast<const uint64_t *>(base);
	for (size_t i = 0; i < words; i++)
		if (v[i] != 1000 + i)
			return fail("word " + std::to_string(i) + " is " + std::to_string(v[i]));
	if (uunmap(base, bytes) != 0)
		return fail(std::string("uunmap: ") + std::strerror(errno));
	close(fd);
	return 0;
}
