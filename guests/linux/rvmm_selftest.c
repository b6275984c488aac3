// SPDX-License-Identifier: GPL-2.0
/*
 * rvmm boot test 2: proves virtio-blk, virtio-rng and virtio-net from inside Linux without user
 * space (user space cannot make system calls on paravirtual KVM hosts, docs/EMULATED-KVM.md).
 * Runs at late_initcall, prints one "rvmm-selftest: <dev> PASS|FAIL" line per device and a
 * summary line, then restarts the machine (boot with reboot=k; rvmm -no-reboot exits 0), or with
 * rvmm_selftest.restart=0 lets the boot go on to mount root= (and panic without an init).
 * With rvmm_selftest.storage=1 it tests the onboard ATA controller instead (pc: PIIX IDE, q35:
 * AHCI): the disk sda through sd and the CD sr0 through sr (ATAPI), mounted as iso9660.
 * With rvmm_selftest.udp_echo=PORT it tests nothing and starts a kernel thread that echoes UDP
 * datagrams sent to PORT (the user network's hostfwd test: a listener in a guest without user
 * space), and logs every carrier change of a network device ("eth0 carrier off": virtio_net
 * itself logs none). With rvmm_selftest.hold=1 as well, the boot waits before the root mount
 * until a device has lost its carrier (the host test stops the user network's helper).
 * Copied into the kernel tree by scripts/build-test-kernel.sh; the host sides are
 * tests/linux_devices.rs and tests/linux_firmware.rs.
 */
#include <linux/async.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/etherdevice.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/init_syscalls.h>
#include <linux/kthread.h>
#include <linux/kdev_t.h>
#include <linux/miscdevice.h>
#include <linux/moduleparam.h>
#include <linux/mman.h>
#include <linux/mount.h>
#include <uapi/linux/mount.h>
#include <linux/netdevice.h>
#include <linux/reboot.h>
#include <linux/rtnetlink.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/task_work.h>
#include <linux/uaccess.h>
#include <asm/unaligned.h>
#include <linux/in.h>
#include <linux/net.h>
#include <net/sch_generic.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>

#define TAG "rvmm-selftest: "

static bool restart = true;
module_param(restart, bool, 0444);
MODULE_PARM_DESC(restart, "restart the machine after the self test (default), else boot on");
static bool storage;
module_param(storage, bool, 0444);
MODULE_PARM_DESC(storage, "test the onboard ATA disk and CD instead of the virtio devices");
static int udp_echo;
module_param(udp_echo, int, 0444);
MODULE_PARM_DESC(udp_echo, "only serve a UDP echo on this port (no device tests)");
static bool hold;
module_param(hold, bool, 0444);
MODULE_PARM_DESC(hold, "with udp_echo: hold the boot before the root mount until a carrier is lost");
/* How long hold waits at most: the host test gives up long before. */
#define HOLD_LIMIT_S 900
/* IEEE 802 "local experimental" EtherType: nothing else on the tap uses it. */
#define SELFTEST_ETH_P 0x88b5

/* Sector 0 as written by tests/linux_devices.rs: this magic, then byte i = i * 7 + 3. */
static const char disk_magic[] = "RVMM-LINUX-DISK-SECTOR0";
/* Sector 1 as written here: this magic, then byte i = i * 13 + 1; the host checks it. */
static const char write_magic[] = "RVMM-LINUX-WROTE-SECTOR1";
static const char ping_magic[] = "RVMM-SELFTEST-PING";
static const char pong_magic[] = "RVMM-SELFTEST-PONG";
/* The files tests/linux_firmware.rs puts on the ISO. */
static const char iso_marker[] = "RVMM-ISO-MARKER: read through sr and iso9660\n";
/* 256 KiB of little-endian u32 words, word k = k * 2654435761 (mod 2^32). */
#define ISO_PATTERN_SIZE (256 << 10)

static bool check_pattern(const u8 *buf, const char *magic, u8 mul, u8 add)
{
	size_t n = strlen(magic), i;

	if (memcmp(buf, magic, n))
		return false;
	for (i = n; i < SECTOR_SIZE; i++)
		if (buf[i] != (u8)(i * mul + add))
			return false;
	return true;
}

static int sector_io(struct block_device *bdev, struct page *page, sector_t sector, blk_opf_t op)
{
	struct bio *bio = bio_alloc(bdev, 1, op, GFP_KERNEL);
	int ret;

	bio->bi_iter.bi_sector = sector;
	if (bio_add_page(bio, page, SECTOR_SIZE, 0) != SECTOR_SIZE) {
		bio_put(bio);
		return -EIO;
	}
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

/* Checks the host's pattern in sector 0 of @path, writes, flushes and reads back sector 1. */
static bool __init test_blk(const char *path)
{
	const fmode_t mode = FMODE_READ | FMODE_WRITE;
	struct block_device *bdev;
	struct page *page;
	dev_t devt = name_to_dev_t(path);
	bool ok = false;
	u8 *buf;
	size_t i;
	int ret;

	if (!devt) {
		pr_err(TAG "blk: no %s\n", path);
		return false;
	}
	bdev = blkdev_get_by_dev(devt, mode, NULL);
	if (IS_ERR(bdev)) {
		pr_err(TAG "blk: open %s: %ld\n", path, PTR_ERR(bdev));
		return false;
	}
	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		goto out_put;
	buf = page_address(page);

	ret = sector_io(bdev, page, 0, REQ_OP_READ);
	if (ret || !check_pattern(buf, disk_magic, 7, 3)) {
		pr_err(TAG "blk: sector 0 read %d, pattern %s (first bytes %*phN)\n", ret,
		       ret ? "not checked" : "wrong", 16, buf);
		goto out_free;
	}
	pr_info(TAG "blk: sector 0 pattern matches\n");

	memset(buf, 0, SECTOR_SIZE);
	memcpy(buf, write_magic, strlen(write_magic));
	for (i = strlen(write_magic); i < SECTOR_SIZE; i++)
		buf[i] = (u8)(i * 13 + 1);
	ret = sector_io(bdev, page, 1, REQ_OP_WRITE | REQ_SYNC);
	if (ret) {
		pr_err(TAG "blk: sector 1 write: %d\n", ret);
		goto out_free;
	}
	ret = blkdev_issue_flush(bdev);
	if (ret) {
		pr_err(TAG "blk: flush: %d\n", ret);
		goto out_free;
	}
	memset(buf, 0, SECTOR_SIZE);
	ret = sector_io(bdev, page, 1, REQ_OP_READ);
	if (ret || !check_pattern(buf, write_magic, 13, 1)) {
		pr_err(TAG "blk: sector 1 read back %d, pattern %s\n", ret,
		       ret ? "not checked" : "wrong");
		goto out_free;
	}
	pr_info(TAG "blk: sector 1 written, flushed and read back\n");
	ok = true;
out_free:
	__free_page(page);
out_put:
	blkdev_put(bdev, mode);
	return ok;
}

/*
 * /dev/hwrng has only a .read that copies to user memory (kernel_read() refuses it), so a kthread
 * borrows a fresh mm with one anonymous page and reads through vfs_read() into that page.
 */
struct rng_job {
	u8 buf[64];
	ssize_t na, nb;
	long err;
	struct completion done;
};

static struct rng_job rng_job;

static int rng_reader(void *data)
{
	static const char path[] = "/dev/rvmm-hwrng";
	struct rng_job *job = data;
	struct mm_struct *mm = mm_alloc();
	unsigned long addr;
	struct file *f;
	loff_t pos = 0;

	if (!mm) {
		job->err = -ENOMEM;
		goto out;
	}
	arch_pick_mmap_layout(mm, &current->signal->rlim[RLIMIT_STACK]);
	kthread_use_mm(mm);
	addr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, 0);
	if (IS_ERR_VALUE(addr)) {
		job->err = (long)addr;
		goto unuse;
	}
	f = filp_open(path, O_RDONLY, 0);
	if (IS_ERR(f)) {
		job->err = PTR_ERR(f);
		goto unmap;
	}
	job->na = vfs_read(f, (char __user *)addr, 32, &pos);
	job->nb = vfs_read(f, (char __user *)addr + 32, 32, &pos);
	filp_close(f, NULL);
	if (copy_from_user(job->buf, (const void __user *)addr, sizeof(job->buf)))
		job->err = -EFAULT;
unmap:
	vm_munmap(addr, PAGE_SIZE);
unuse:
	kthread_unuse_mm(mm);
	mmput(mm);
out:
	complete(&job->done);
	return 0;
}

static bool __init test_rng(void)
{
	struct rng_job *job = &rng_job;
	struct task_struct *t;
	int ret;

	/* No devtmpfs before the root mount: make the misc node in the initial rootfs. */
	ret = init_mknod("/dev/rvmm-hwrng", S_IFCHR | 0600,
			 new_encode_dev(MKDEV(MISC_MAJOR, HWRNG_MINOR)));
	if (ret && ret != -EEXIST) {
		pr_err(TAG "rng: mknod /dev/rvmm-hwrng: %d\n", ret);
		return false;
	}
	init_completion(&job->done);
	t = kthread_run(rng_reader, job, "rvmm-rng-test");
	if (IS_ERR(t)) {
		pr_err(TAG "rng: kthread: %ld\n", PTR_ERR(t));
		return false;
	}
	if (!wait_for_completion_timeout(&job->done, 30 * HZ)) {
		pr_err(TAG "rng: no answer from /dev/hwrng in 30 s\n");
		return false;
	}
	if (job->err || job->na != 32 || job->nb != 32) {
		pr_err(TAG "rng: error %ld, reads %zd and %zd of 32 bytes\n", job->err, job->na,
		       job->nb);
		return false;
	}
	if (!memcmp(job->buf, job->buf + 32, 32) || !memchr_inv(job->buf, 0, 32)) {
		pr_err(TAG "rng: not random: %*phN\n", 64, job->buf);
		return false;
	}
	pr_info(TAG "rng: read 64 bytes from /dev/hwrng (%*phN...)\n", 8, job->buf);
	return true;
}

static DECLARE_COMPLETION(pong_done);

static int selftest_rx(struct sk_buff *skb, struct net_device *dev, struct packet_type *pt,
		       struct net_device *orig_dev)
{
	size_t n = strlen(pong_magic);

	/* eth_type_trans() already pulled the Ethernet header. */
	if (skb->len >= n && !memcmp(skb->data, pong_magic, n))
		complete(&pong_done);
	kfree_skb(skb);
	return NET_RX_SUCCESS;
}

static struct packet_type selftest_pt = {
	.type = cpu_to_be16(SELFTEST_ETH_P),
	.func = selftest_rx,
};

static int send_ping(struct net_device *dev, int seq)
{
	struct sk_buff *skb = alloc_skb(ETH_ZLEN + 64, GFP_KERNEL);
	struct ethhdr *eth;
	char *payload;

	if (!skb)
		return -ENOMEM;
	skb_reserve(skb, ETH_HLEN);
	payload = skb_put_zero(skb, 64);
	snprintf(payload, 64, "%s %d %pM", ping_magic, seq, dev->dev_addr);
	eth = skb_push(skb, ETH_HLEN);
	skb_reset_mac_header(skb);
	eth_broadcast_addr(eth->h_dest);
	ether_addr_copy(eth->h_source, dev->dev_addr);
	eth->h_proto = cpu_to_be16(SELFTEST_ETH_P);
	skb->dev = dev;
	skb->protocol = eth->h_proto;
	skb_reset_network_header(skb);
	return dev_queue_xmit(skb);
}

static bool __init test_net(void)
{
	struct net_device *dev = dev_get_by_name(&init_net, "eth0");
	bool ok = false;
	int ret, i;

	if (!dev) {
		pr_err(TAG "net: no eth0\n");
		return false;
	}
	rtnl_lock();
	ret = dev_open(dev, NULL);
	rtnl_unlock();
	if (ret) {
		pr_err(TAG "net: open eth0: %d\n", ret);
		goto out;
	}
	/* The qdisc is attached once the carrier is up (linkwatch may defer it). */
	for (i = 0; i < 100 && (!netif_carrier_ok(dev) || qdisc_tx_is_noop(dev)); i++)
		msleep(50);
	pr_info(TAG "net: eth0 %pM carrier %s\n", dev->dev_addr,
		netif_carrier_ok(dev) ? "up" : "down");
	dev_add_pack(&selftest_pt);
	/* Resend once a second: the host answers the first ping it sees with a pong. */
	for (i = 0; i < 30; i++) {
		ret = send_ping(dev, i);
		if (ret)
			pr_err(TAG "net: xmit ping %d: %d\n", i, ret);
		if (wait_for_completion_timeout(&pong_done, HZ)) {
			pr_info(TAG "net: sent ping %d, received pong\n", i);
			ok = true;
			break;
		}
	}
	dev_remove_pack(&selftest_pt);
	if (!ok)
		pr_err(TAG "net: no pong after %d pings\n", i);
out:
	dev_put(dev);
	return ok;
}

/*
 * The SCSI device under a disk and the controller under it: proves which driver (sd or sr on
 * libata's SCSI translation, and ahci or ata_piix) serves @path. Returns false if it is not a
 * SCSI device of @type.
 */
static bool __init show_scsi_path(const char *what, dev_t devt, int type)
{
	struct block_device *bdev = blkdev_get_by_dev(devt, FMODE_READ, NULL);
	struct scsi_device *sdev;
	struct device *parent;
	bool ok = false;

	if (IS_ERR(bdev)) {
		pr_err(TAG "%s: open: %ld\n", what, PTR_ERR(bdev));
		return false;
	}
	parent = disk_to_dev(bdev->bd_disk)->parent;
	if (!parent || !scsi_is_sdev_device(parent)) {
		pr_err(TAG "%s: %s is not on a SCSI device\n", what, bdev->bd_disk->disk_name);
		goto out;
	}
	sdev = to_scsi_device(parent);
	pr_info(TAG "%s: %s is SCSI %s type %d \"%.8s\" \"%.16s\" on %s (%s %s)\n", what,
		bdev->bd_disk->disk_name, dev_name(parent), sdev->type, sdev->vendor, sdev->model,
		sdev->host->hostt->name, dev_driver_string(sdev->host->dma_dev),
		dev_name(sdev->host->dma_dev));
	ok = sdev->type == type;
out:
	blkdev_put(bdev, FMODE_READ);
	return ok;
}

/* Waits up to 60 s for the asynchronous ATA and SCSI probes to create @path. */
static dev_t __init wait_for_disk(const char *path)
{
	dev_t devt = 0;
	int i;

	for (i = 0; i < 600 && !devt; i++) {
		wait_for_device_probe();
		async_synchronize_full();
		devt = name_to_dev_t(path);
		if (!devt)
			msleep(100);
	}
	if (!devt)
		pr_err(TAG "no %s after 60 s\n", path);
	return devt;
}

static bool __init iso_read(struct file *f, loff_t size, u8 *buf, size_t buf_size)
{
	loff_t pos = 0;
	size_t i;

	while (pos < size) {
		loff_t start = pos;
		ssize_t n = kernel_read(f, buf, min_t(loff_t, buf_size, size - pos), &pos);

		if (n <= 0) {
			pr_err(TAG "cd: pattern.bin read at %lld: %zd\n", start, n);
			return false;
		}
		for (i = 0; i + 4 <= n; i += 4) {
			u32 k = (u32)((start + i) / 4);

			if (get_unaligned_le32(buf + i) != k * 2654435761u) {
				pr_err(TAG "cd: pattern.bin wrong at %lld\n", start + i);
				return false;
			}
		}
	}
	return true;
}

/* Mounts sr0 as iso9660 and checks the two files tests/linux_firmware.rs put on it. */
static bool __init test_cd(void)
{
	static const char dev[] = "/dev/rvmm-sr0", dir[] = "/rvmm-cd";
	const size_t buf_size = 64 << 10;
	dev_t devt = wait_for_disk("/dev/sr0");
	bool ok = false;
	struct file *f;
	loff_t pos = 0;
	ssize_t n;
	u8 *buf;
	int ret;

	if (!devt || !show_scsi_path("cd", devt, TYPE_ROM))
		return false;
	/* No devtmpfs before the root mount: make the node in the initial rootfs. */
	ret = init_mknod(dev, S_IFBLK | 0600, new_encode_dev(devt));
	if (!ret || ret == -EEXIST)
		ret = init_mkdir(dir, 0755);
	if (!ret || ret == -EEXIST)
		ret = init_mount(dev, dir, "iso9660", MS_RDONLY, NULL);
	if (ret) {
		pr_err(TAG "cd: mknod, mkdir or mount of sr0 (iso9660) on %s: %d\n", dir, ret);
		return false;
	}
	buf = kmalloc(buf_size, GFP_KERNEL);
	if (!buf)
		goto out_umount;
	f = filp_open("/rvmm-cd/rvmm/marker.txt", O_RDONLY, 0);
	if (IS_ERR(f)) {
		pr_err(TAG "cd: open /rvmm/marker.txt: %ld\n", PTR_ERR(f));
		goto out_free;
	}
	n = kernel_read(f, buf, buf_size - 1, &pos);
	filp_close(f, NULL);
	if (n != strlen(iso_marker) || memcmp(buf, iso_marker, n)) {
		pr_err(TAG "cd: /rvmm/marker.txt: read %zd bytes, not the marker\n", n);
		goto out_free;
	}
	pr_info(TAG "cd: mounted sr0 (iso9660), /rvmm/marker.txt matches\n");
	f = filp_open("/rvmm-cd/rvmm/pattern.bin", O_RDONLY, 0);
	if (IS_ERR(f)) {
		pr_err(TAG "cd: open /rvmm/pattern.bin: %ld\n", PTR_ERR(f));
		goto out_free;
	}
	if (i_size_read(file_inode(f)) != ISO_PATTERN_SIZE)
		pr_err(TAG "cd: /rvmm/pattern.bin has %lld bytes\n", i_size_read(file_inode(f)));
	else
		ok = iso_read(f, ISO_PATTERN_SIZE, buf, buf_size);
	filp_close(f, NULL);
	if (ok)
		pr_info(TAG "cd: /rvmm/pattern.bin (%d bytes) matches\n", ISO_PATTERN_SIZE);
out_free:
	kfree(buf);
out_umount:
	/*
	 * kernel_init is a user-mode thread: its last fput waits as task work for a return to user
	 * space that has not come yet. Run it, or the mount stays busy.
	 */
	task_work_run();
	ret = init_umount(dir, 0);
	if (ret) {
		pr_err(TAG "cd: umount: %d\n", ret);
		ok = false;
	}
	return ok;
}

static bool __init test_disk(void)
{
	dev_t devt = wait_for_disk("/dev/sda");

	return devt && show_scsi_path("disk", devt, TYPE_DISK) && test_blk("/dev/sda");
}

static void __init finish(bool all)
{
	pr_info(TAG "%s, %s\n", all ? "all PASS" : "FAIL", restart ? "restarting" : "booting on");
	if (restart)
		kernel_restart(NULL);
}

/* Echo every datagram on udp_echo back to its sender, for the life of the kernel. */
static int echo_thread(void *data)
{
	struct socket *sock = data;
	static char buf[2048];

	for (;;) {
		struct sockaddr_in from;
		struct msghdr msg = { .msg_name = &from, .msg_namelen = sizeof(from) };
		struct kvec vec = { .iov_base = buf, .iov_len = sizeof(buf) };
		int n = kernel_recvmsg(sock, &msg, &vec, 1, sizeof(buf), 0);

		if (n < 0) {
			pr_err(TAG "udp echo: recvmsg: %d\n", n);
			msleep(100);
			continue;
		}
		msg = (struct msghdr){ .msg_name = &from, .msg_namelen = sizeof(from) };
		vec = (struct kvec){ .iov_base = buf, .iov_len = n };
		n = kernel_sendmsg(sock, &msg, &vec, 1, n);
		pr_info(TAG "udp echo: %d bytes back to %pI4:%u\n", n, &from.sin_addr,
			ntohs(from.sin_port));
	}
	return 0;
}

static DECLARE_WAIT_QUEUE_HEAD(carrier_wq);
static bool carrier_lost;

/* Logs carrier changes (NETDEV_CHANGE) and wakes hold_boot() when one is lost. */
static int carrier_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);
	bool on;

	if (event != NETDEV_CHANGE || (dev->flags & IFF_LOOPBACK))
		return NOTIFY_DONE;
	on = netif_carrier_ok(dev);
	pr_info(TAG "%s carrier %s\n", dev->name, on ? "on" : "off");
	if (!on) {
		WRITE_ONCE(carrier_lost, true);
		wake_up(&carrier_wq);
	}
	return NOTIFY_DONE;
}

static struct notifier_block carrier_nb = { .notifier_call = carrier_event };

static void __init start_udp_echo(void)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = htons(udp_echo),
		.sin_addr.s_addr = htonl(INADDR_ANY),
	};
	struct socket *sock;
	int ret = sock_create_kern(&init_net, PF_INET, SOCK_DGRAM, IPPROTO_UDP, &sock);

	if (!ret)
		ret = kernel_bind(sock, (struct sockaddr *)&addr, sizeof(addr));
	if (!ret)
		ret = PTR_ERR_OR_ZERO(kthread_run(echo_thread, sock, "rvmm-udp-echo"));
	if (ret)
		pr_err(TAG "udp echo on port %d: %d\n", udp_echo, ret);
	else
		pr_info(TAG "udp echo on port %d\n", udp_echo);
}

static int __init rvmm_selftest(void)
{
	bool blk, rng, net;

	if (udp_echo) {
		register_netdevice_notifier(&carrier_nb);
		start_udp_echo();
		return 0;
	}

	if (storage) {
		bool cd = test_cd(), disk = test_disk();

		pr_info(TAG "cd %s\n", cd ? "PASS" : "FAIL");
		pr_info(TAG "disk %s\n", disk ? "PASS" : "FAIL");
		finish(cd && disk);
		return 0;
	}
	blk = test_blk("/dev/vda");
	rng = test_rng();
	net = test_net();

	pr_info(TAG "blk %s\n", blk ? "PASS" : "FAIL");
	pr_info(TAG "rng %s\n", rng ? "PASS" : "FAIL");
	pr_info(TAG "net %s\n", net ? "PASS" : "FAIL");
	finish(blk && rng && net);
	return 0;
}
late_initcall(rvmm_selftest);

/*
 * After every late_initcall (ipconfig's DHCP and netconsole included), before the root mount:
 * with hold=1, wait until a network device loses its carrier.
 */
static int __init hold_boot(void)
{
	if (!udp_echo || !hold)
		return 0;
	pr_info(TAG "holding the boot until a carrier is lost\n");
	if (wait_event_timeout(carrier_wq, READ_ONCE(carrier_lost), HOLD_LIMIT_S * HZ))
		pr_info(TAG "carrier lost, booting on\n");
	else
		pr_info(TAG "no carrier lost in %d s, booting on\n", HOLD_LIMIT_S);
	return 0;
}
late_initcall_sync(hold_boot);
