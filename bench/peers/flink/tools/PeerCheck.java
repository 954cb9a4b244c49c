// Test helper for the Flink peer (not part of the peer jar). Run as a single-file program:
//   java -cp 'bench/peers/flink/target/libs/*' bench/peers/flink/tools/PeerCheck.java produce BOOT IN OUT N KEYS
//   java -cp 'bench/peers/flink/target/libs/*' bench/peers/flink/tools/PeerCheck.java topics BOOT T1 [T2...]
//   java -cp 'bench/peers/flink/target/libs/*' bench/peers/flink/tools/PeerCheck.java check BOOT OUT identity|count N KEYS read_committed|read_uncommitted TIMEOUT_S
// produce: creates IN and OUT (2 partitions) and writes N records, key "k<i%KEYS>", 100-byte value.
// check: reads OUT from the start until the expected record count is reached (or timeout) and verifies it.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class PeerCheck {
    static String key(int i, int keys) { return "k" + (i % keys); }
    static String value(int i) {
        StringBuilder sb = new StringBuilder("v" + i + ":");
        while (sb.length() < 100) sb.append('x');
        return sb.toString();
    }

    public static void main(String[] a) throws Exception {
        String boot = a[1];
        if (a[0].equals("topics")) { // topics BOOT T1 [T2...]: create with 2 partitions
            Properties ap = new Properties();
            ap.put("bootstrap.servers", boot);
            List<NewTopic> ts = new ArrayList<>();
            for (int i = 2; i < a.length; i++) ts.add(new NewTopic(a[i], 2, (short) 1));
            try (Admin admin = Admin.create(ap)) { admin.createTopics(ts).all().get(); }
            return;
        }
        if (a[0].equals("produce")) {
            String in = a[2], out = a[3];
            int n = Integer.parseInt(a[4]), keys = Integer.parseInt(a[5]);
            Properties ap = new Properties();
            ap.put("bootstrap.servers", boot);
            try (Admin admin = Admin.create(ap)) {
                admin.createTopics(List.of(new NewTopic(in, 2, (short) 1), new NewTopic(out, 2, (short) 1))).all().get();
            }
            Properties pp = new Properties();
            pp.put("bootstrap.servers", boot);
            pp.put("linger.ms", "5");
            try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
                for (int i = 0; i < n; i++)
                    p.send(new ProducerRecord<>(in, key(i, keys).getBytes(StandardCharsets.UTF_8), value(i).getBytes(StandardCharsets.UTF_8)));
                p.flush();
            }
            System.out.println("produced " + n);
            return;
        }
        String out = a[2], job = a[3], iso = a[6];
        int n = Integer.parseInt(a[4]), keys = Integer.parseInt(a[5]);
        long timeoutMs = Long.parseLong(a[7]) * 1000;
        Properties cp = new Properties();
        cp.put("bootstrap.servers", boot);
        cp.put("isolation.level", iso);
        cp.put("enable.auto.commit", "false");
        long t0 = System.currentTimeMillis();
        Map<String, Integer> multiset = new HashMap<>();
        Map<String, List<String>> perKey = new HashMap<>();
        Map<String, Integer> keyPartition = new HashMap<>();
        int got = 0;
        String err = null;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(out).forEach(pi -> tps.add(new TopicPartition(out, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            while (got < n && System.currentTimeMillis() - t0 < timeoutMs) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    got++;
                    String k = r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8);
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    multiset.merge(k + "|" + v, 1, Integer::sum);
                    perKey.computeIfAbsent(k, x -> new ArrayList<>()).add(v);
                    Integer prev = keyPartition.put(k, r.partition());
                    if (prev != null && prev != r.partition() && err == null) err = "key " + k + " on two partitions";
                }
            }
            // linger briefly to catch any surplus (duplicates)
            long end = System.currentTimeMillis() + 2000;
            while (System.currentTimeMillis() < end)
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    got++;
                    String k = new String(r.key(), StandardCharsets.UTF_8);
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    multiset.merge(k + "|" + v, 1, Integer::sum);
                    perKey.computeIfAbsent(k, x -> new ArrayList<>()).add(v);
                }
        }
        long ms = System.currentTimeMillis() - t0;
        if (err == null && got != n) err = "expected " + n + " records, got " + got;
        if (err == null && job.equals("identity")) {
            Map<String, Integer> want = new HashMap<>();
            for (int i = 0; i < n; i++) want.merge(key(i, keys) + "|" + value(i), 1, Integer::sum);
            if (!want.equals(multiset)) err = "identity multiset differs";
        }
        if (err == null && job.equals("count")) {
            int[] per = new int[keys];
            for (int i = 0; i < n; i++) per[i % keys]++;
            for (int k = 0; k < keys && err == null; k++) {
                List<String> vs = perKey.getOrDefault("k" + k, List.of());
                if (vs.size() != per[k]) { err = "k" + k + ": " + vs.size() + " records, want " + per[k]; break; }
                for (int j = 0; j < vs.size(); j++)
                    if (!vs.get(j).equals(Integer.toString(j + 1))) { err = "k" + k + " #" + j + " = " + vs.get(j); break; }
            }
        }
        System.out.println((err == null ? "OK " : "FAIL " + err + " ") + job + " " + iso + " records=" + got + " read_ms=" + ms);
        System.exit(err == null ? 0 : 1);
    }
}
