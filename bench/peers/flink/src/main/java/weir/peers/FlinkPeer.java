package weir.peers;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Properties;
import java.util.stream.Stream;

import org.apache.flink.api.common.JobStatus;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Flink peer for the Weir benchmark: runs the "identity" or "count" job in a local MiniCluster,
 * Kafka in, Kafka out, until the process is killed. Prints "READY" on stdout once the job runs.
 */
public final class FlinkPeer {

    /** One Kafka record: raw key and value bytes (either may be null). A Flink POJO. */
    public static final class Rec {
        public byte[] key;
        public byte[] value;

        public Rec() {}

        public Rec(byte[] key, byte[] value) {
            this.key = key;
            this.value = value;
        }
    }

    static final class RawDeserializer implements KafkaRecordDeserializationSchema<Rec> {
        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> r, Collector<Rec> out) {
            out.collect(new Rec(r.key(), r.value()));
        }

        @Override
        public TypeInformation<Rec> getProducedType() {
            return TypeInformation.of(Rec.class);
        }
    }

    static final class RawSerializer implements KafkaRecordSerializationSchema<Rec> {
        private final String topic;

        RawSerializer(String topic) {
            this.topic = topic;
        }

        @Override
        public ProducerRecord<byte[], byte[]> serialize(Rec r, KafkaSinkContext ctx, Long ts) {
            // partition left null: the producer's default partitioner hashes the key
            return new ProducerRecord<>(topic, r.key, r.value);
        }
    }

    static final class KeyOf implements KeySelector<Rec, String> {
        @Override
        public String getKey(Rec r) {
            return r.key == null ? "" : new String(r.key, StandardCharsets.UTF_8);
        }
    }

    /** Running count per key; emits (key bytes, decimal count) for every record. */
    static final class RunningCount extends KeyedProcessFunction<String, Rec, Rec> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Rec r, Context ctx, Collector<Rec> out) throws Exception {
            Long c = count.value();
            long n = (c == null ? 0L : c) + 1L;
            count.update(n);
            out.collect(new Rec(r.key, Long.toString(n).getBytes(StandardCharsets.UTF_8)));
        }
    }

    private static void usage(String msg) {
        System.err.println("error: " + msg);
        System.err.println("usage: FlinkPeer --bootstrap HOST:PORT --input TOPIC --output TOPIC"
                + " --job identity|count --guarantee at-least-once|exactly-once"
                + " --parallelism N --group ID");
        System.exit(2);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = null, input = null, output = null, job = null, guarantee = null, group = null;
        int parallelism = 1;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) usage("missing value for " + a);
            String v = args[++i];
            switch (a) {
                case "--bootstrap": bootstrap = v; break;
                case "--input": input = v; break;
                case "--output": output = v; break;
                case "--job": job = v; break;
                case "--guarantee": guarantee = v; break;
                case "--group": group = v; break;
                case "--parallelism":
                    try { parallelism = Integer.parseInt(v); } catch (NumberFormatException e) { usage("bad --parallelism " + v); }
                    break;
                default: usage("unknown argument " + a);
            }
        }
        if (bootstrap == null || input == null || output == null || job == null || guarantee == null || group == null)
            usage("all of --bootstrap --input --output --job --guarantee --group are required");
        if (!job.equals("identity") && !job.equals("count")) usage("bad --job " + job);
        boolean exactlyOnce;
        if (guarantee.equals("exactly-once")) exactlyOnce = true;
        else if (guarantee.equals("at-least-once")) exactlyOnce = false;
        else { usage("bad --guarantee " + guarantee); return; }
        if (parallelism < 1) usage("bad --parallelism " + parallelism);

        Path ckptDir = Files.createTempDirectory("weir-flink-ckpt-");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> deleteTree(ckptDir)));

        Configuration conf = new Configuration();
        conf.setString("state.backend.type", "hashmap");
        conf.setString("execution.checkpointing.storage", "filesystem");
        conf.setString("execution.checkpointing.dir", ckptDir.toUri().toString());
        // small MiniCluster footprint (2-core machine, -Xmx768m)
        conf.setString("taskmanager.memory.network.min", "64m");
        conf.setString("taskmanager.memory.network.max", "64m");
        conf.setString("taskmanager.memory.managed.size", "32m");

        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.enableCheckpointing(1000L, exactlyOnce ? CheckpointingMode.EXACTLY_ONCE : CheckpointingMode.AT_LEAST_ONCE);

        KafkaSource<Rec> source = KafkaSource.<Rec>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(input)
                .setGroupId(group)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setDeserializer(new RawDeserializer())
                .build();

        Properties producerProps = new Properties();
        producerProps.setProperty("transaction.timeout.ms", "60000");
        KafkaSink<Rec> sink = KafkaSink.<Rec>builder()
                .setBootstrapServers(bootstrap)
                .setRecordSerializer(new RawSerializer(output))
                .setDeliveryGuarantee(exactlyOnce ? DeliveryGuarantee.EXACTLY_ONCE : DeliveryGuarantee.AT_LEAST_ONCE)
                .setTransactionalIdPrefix("weir-flink-" + group)
                .setKafkaProducerConfig(producerProps)
                .build();

        DataStream<Rec> in = env.fromSource(source, WatermarkStrategy.noWatermarks(), "kafka-in");
        DataStream<Rec> out;
        if (job.equals("identity")) {
            out = in;
        } else {
            out = in.keyBy(new KeyOf()).process(new RunningCount()).returns(TypeInformation.of(Rec.class)).name("count");
        }
        out.sinkTo(sink).name("kafka-out");

        JobClient client = env.executeAsync("weir-" + job + "-" + guarantee);
        while (true) {
            JobStatus st = client.getJobStatus().get();
            if (st == JobStatus.RUNNING) break;
            if (st.isGloballyTerminalState()) {
                System.err.println("job ended before running: " + st);
                System.exit(1);
            }
            Thread.sleep(20);
        }
        System.out.println("READY");
        System.out.flush();
        // runs until killed; if the job ever terminates on its own, report it and exit non-zero
        try {
            client.getJobExecutionResult().get();
            System.err.println("job finished unexpectedly");
        } catch (Exception e) {
            System.err.println("job failed: " + e);
            e.printStackTrace();
        }
        System.exit(1);
    }

    private static void deleteTree(Path p) {
        try (Stream<Path> s = Files.walk(p)) {
            s.sorted(Comparator.reverseOrder()).forEach(q -> {
                try { Files.deleteIfExists(q); } catch (IOException ignored) { }
            });
        } catch (IOException ignored) {
        }
    }
}
