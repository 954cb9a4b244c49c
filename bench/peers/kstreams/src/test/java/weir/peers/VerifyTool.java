package weir.peers;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Manual check of KStreamsPeer against a live broker (not a unit test).
 *
 * <pre>
 * VerifyTool create  BOOTSTRAP TOPIC PARTITIONS
 * VerifyTool produce BOOTSTRAP TOPIC RECORDS KEYS         (key k&lt;i&gt;, 100-byte value, seed 42)
 * VerifyTool check   BOOTSTRAP OUTPUT identity|count RECORDS KEYS read_committed|read_uncommitted TIMEOUT_S
 * </pre>
 *
 * "check" regenerates the same input (seed 42) and compares: identity = same multiset of
 * (key, value); count = for each key exactly "1".."n" in output order. Exit 0 on success.
 */
public final class VerifyTool {

    static byte[][] keys(int records, int keys) {
        byte[][] out = new byte[records][];
        for (int i = 0; i < records; i++) {
            out[i] = ("k" + (i % keys)).getBytes(StandardCharsets.UTF_8);
        }
        return out;
    }

    static byte[][] values(int records) {
        Random r = new Random(42);
        byte[][] out = new byte[records][];
        for (int i = 0; i < records; i++) {
            byte[] v = new byte[100];
            r.nextBytes(v);
            byte[] seq = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
            System.arraycopy(seq, 0, v, 0, seq.length); // unique prefix
            out[i] = v;
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[1];
        switch (args[0]) {
            case "create": {
                Properties p = new Properties();
                p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                try (Admin admin = Admin.create(p)) {
                    admin.createTopics(List.of(new NewTopic(args[2], Integer.parseInt(args[3]), (short) 1)))
                            .all().get();
                }
                System.out.println("created " + args[2]);
                return;
            }
            case "produce": {
                int n = Integer.parseInt(args[3]);
                int k = Integer.parseInt(args[4]);
                byte[][] ks = keys(n, k);
                byte[][] vs = values(n);
                Properties p = new Properties();
                p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
                p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
                p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
                p.put(ProducerConfig.ACKS_CONFIG, "all");
                try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
                    for (int i = 0; i < n; i++) {
                        prod.send(new ProducerRecord<>(args[2], ks[i], vs[i]));
                    }
                    prod.flush();
                }
                System.out.println("produced " + n);
                return;
            }
            case "check": {
                String topic = args[2];
                String job = args[3];
                int n = Integer.parseInt(args[4]);
                int k = Integer.parseInt(args[5]);
                String isolation = args[6];
                long timeoutMs = Long.parseLong(args[7]) * 1000L;
                System.exit(check(bootstrap, topic, job, n, k, isolation, timeoutMs) ? 0 : 1);
                return;
            }
            default:
                throw new IllegalArgumentException(args[0]);
        }
    }

    static boolean check(String bootstrap, String topic, String job, int n, int k, String isolation,
            long timeoutMs) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        List<byte[][]> got = new ArrayList<>();
        long start = System.currentTimeMillis();
        long lastNew = start;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            // Read until we have n records and nothing new arrived for 3 s (to catch extras),
            // or until the timeout.
            while (System.currentTimeMillis() - start < timeoutMs) {
                var recs = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    got.add(new byte[][] {r.key(), r.value()});
                }
                if (!recs.isEmpty()) {
                    lastNew = System.currentTimeMillis();
                }
                if (got.size() >= n && System.currentTimeMillis() - lastNew > 3000) {
                    break;
                }
            }
        }
        System.out.printf("read %d records from %s (%s) in %d ms%n", got.size(), topic, isolation,
                System.currentTimeMillis() - start);
        byte[][] ks = keys(n, k);
        if (job.equals("identity")) {
            Map<String, Integer> want = new HashMap<>();
            byte[][] vs = values(n);
            for (int i = 0; i < n; i++) {
                want.merge(hex(ks[i]) + ":" + hex(vs[i]), 1, Integer::sum);
            }
            Map<String, Integer> have = new HashMap<>();
            for (byte[][] kv : got) {
                have.merge(hex(kv[0]) + ":" + hex(kv[1]), 1, Integer::sum);
            }
            boolean ok = want.equals(have);
            System.out.println(ok ? "identity OK: same multiset of " + n + " records"
                    : "identity FAIL: want " + want.size() + " distinct, have " + have.size()
                            + " distinct, " + got.size() + " total");
            return ok;
        }
        Map<String, Integer> wantN = new HashMap<>();
        for (byte[] key : ks) {
            wantN.merge(new String(key, StandardCharsets.UTF_8), 1, Integer::sum);
        }
        Map<String, List<String>> seen = new HashMap<>();
        for (byte[][] kv : got) {
            seen.computeIfAbsent(new String(kv[0], StandardCharsets.UTF_8), x -> new ArrayList<>())
                    .add(new String(kv[1], StandardCharsets.UTF_8));
        }
        boolean ok = seen.keySet().equals(wantN.keySet());
        int bad = 0;
        for (var e : wantN.entrySet()) {
            List<String> vals = seen.getOrDefault(e.getKey(), List.of());
            boolean good = vals.size() == e.getValue();
            for (int i = 0; good && i < vals.size(); i++) {
                good = vals.get(i).equals(Integer.toString(i + 1));
            }
            if (!good) {
                ok = false;
                if (bad++ < 3) {
                    System.out.println("key " + e.getKey() + " want 1.." + e.getValue() + " got "
                            + vals.size() + " values, first " + vals.subList(0, Math.min(5, vals.size())));
                }
            }
        }
        System.out.println(ok ? "count OK: " + wantN.size() + " keys, each exactly 1..n in order"
                : "count FAIL: " + bad + " bad keys");
        return ok;
    }

    static String hex(byte[] b) {
        StringBuilder s = new StringBuilder(b.length * 2);
        for (byte x : b) {
            s.append(Character.forDigit((x >> 4) & 0xf, 16)).append(Character.forDigit(x & 0xf, 16));
        }
        return s.toString();
    }
}
